"""Killed detect and evaluate runs: no worker outlives its stage, the next run leaves no
temporaries, and a killed evaluate leaves the previous outputs whole (issue 15, finding 8).

The stages run as real subprocesses and are killed with SIGKILL, as a user's kill -9,
an out-of-memory kill or a cancelled CI job would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_detect as td
import test_eval_stage as te

from ichinpaint import io, model

# Enough series that evaluate is still working when its workers have started.
MANY = {
    **{f"ID_a{i:09d}": (f"PV{i}", "val", {}, {}, set()) for i in range(8)},
    **{
        f"ID_b{i:09d}": (f"PT{i}", "test", {1: "subdural"} if i % 2 else {}, {}, set())
        for i in range(32)
    },
}


def children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "ICHINPAINT_DEBUG": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "ichinpaint.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def wait_for(condition, timeout: float, every: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every)
    return False


def temporaries(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob(".*") if ".tmp" in p.name]


def evaluate_argv(root: Path, n_jobs: int) -> list[str]:
    return [*te.evaluate_paths(root), "--n_splits", "2", "--n_jobs", str(n_jobs)]


def snapshot(root: Path) -> dict[str, bytes]:
    files = [root / "metrics/detection.json", root / "data/submission.csv"]
    files += sorted(p for p in (root / "metrics/plots").glob("*.csv") if p.name[0] != ".")
    return {str(p): p.read_bytes() for p in files}


@pytest.mark.slow  # ~30 s: two evaluations and a killed one
def test_killed_evaluate_leaves_no_workers_no_temporaries_and_old_outputs_whole(tmp_path):
    root = tmp_path
    te.build(root, series=MANY)
    from ichinpaint import cli

    assert cli.main(evaluate_argv(root, 1)) == 0
    before = snapshot(root)
    # what earlier killed runs left behind
    (root / "metrics/.gallery.abc123.tmp").mkdir()
    (root / "metrics/plots/.slice_roc.csv.abc123.tmp.csv").write_text("half")

    proc = start(evaluate_argv(root, 2))
    workers: set[int] = set()

    def workers_started() -> bool:
        workers.update(children(proc.pid))
        return bool(workers) or proc.poll() is not None

    assert wait_for(workers_started, timeout=60)
    if proc.poll() is not None:
        pytest.skip("evaluate finished before its workers could be seen")
    time.sleep(0.5)
    workers.update(children(proc.pid))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not any(alive(w) for w in workers), timeout=10, every=0.1), (
        "joblib workers outlived the killed stage"
    )
    assert snapshot(root) == before  # nothing half-new beside the old outputs

    assert cli.main(evaluate_argv(root, 1)) == 0
    assert temporaries(root / "metrics", root / "data") == []
    assert snapshot(root) == before  # same inputs, same outputs


@pytest.fixture(scope="module")
def detect_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    td.write_dataset(root)
    module, spec = td.tiny_inpainter(td.IMG)
    model.save_inpainter(root / "models/inpainter.ckpt", module.state_dict(), spec)
    return root


def detect_argv(root: Path) -> list[str]:
    return [
        "detect", "--slices", str(root / "data/processed/slices.csv"),
        "--model", str(root / "models/inpainter.ckpt"), "--nifti", str(root / "data/interim/nifti"),
        "--canvas", str(td.CANVAS), "--root", str(root), "--out", str(root / "data/detections"),
        "--metrics", str(root / "metrics/detect.json"), "--strategy", "repaint",
        "--ddim_steps", "25", "--sizes", "32", "64", "--offsets", "--batch_size", "1",
        "--n_overlays", "0", "--device", "cpu",
    ]  # fmt: skip


@pytest.mark.slow  # ~40 s: a killed detection and a full one
def test_killed_detect_leaves_temporaries_that_the_next_run_removes(detect_root):
    root = detect_root
    data = root / "data"
    store = data / "detections.parts"  # the series store: finished series land whole

    def working() -> bool:  # the store exists once the stage has read its inputs
        return bool(temporaries(data) or store.is_dir())

    proc = start(detect_argv(root))
    assert wait_for(lambda: working() or proc.poll() is not None, timeout=120)
    time.sleep(1.0)  # inside the UNet loop of the first series
    if proc.poll() is not None:
        pytest.skip("detect finished before its work could be seen")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (data / "detections").exists()  # nothing that looks finished
    (data / ".detections.abc123.tmp").mkdir()  # what an older killed merge would leave
    io.write_json(root / "metrics/.detect.json.abc123.tmp.json", {"half": True})

    from ichinpaint import cli

    argv = detect_argv(root)
    argv[argv.index("--ddim_steps") + 1] = "2"
    assert cli.main(argv) == 0
    assert temporaries(data, root / "metrics") == []
    assert (data / "detections/scores.csv").is_file()
