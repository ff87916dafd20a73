"""Detection sharded by series, resumed after a kill, and merged: identical to one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import tiny_inpainter
from test_detect import SERIES, write_dataset

from ichinpaint import cli, model
from ichinpaint.detection import series, shards

DETECTED = sorted(uid for uid, split, _, _ in SERIES if split != "train")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The test_detect data set, a tiny model, and the single-process reference run."""
    root = tmp_path_factory.mktemp("shards")
    write_dataset(root)
    module, spec = tiny_inpainter(16)
    model.save_inpainter(root / "m.ckpt", module.state_dict(), spec)
    reference = root / "reference"
    assert cli.main(argv(root, reference)) == 0
    return root, reference


def argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "detect", "--slices", str(root / "data/processed/slices.csv"), "--model",
        str(root / "m.ckpt"), "--nifti", str(root / "data/interim/nifti"), "--canvas", "32",
        "--root", str(root), "--out", str(out), "--metrics", str(out.with_suffix(".json")),
        "--sizes", "32", "64", "--batch_size", "16", "--n_overlays", "2", *extra,
    ]  # fmt: skip


def assert_same_outputs(out: Path, reference: Path) -> None:
    """Maps, scores and overlays byte for byte."""
    names = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert [f"{uid}.nii.gz" for uid in DETECTED] == sorted(
        p.name for p in reference.glob("*.nii.gz")
    )
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def records(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(store.glob("ID_*.json"))}


def test_parts_are_disjoint_cover_everything_and_follow_torchrun():
    uids = [f"ID_{i:010x}" for i in range(7)]
    parts = [shards.select_part(uids[::-1], 3, i) for i in range(3)]
    assert sorted(sum(parts, [])) == uids and parts[0] == [uids[0], uids[3], uids[6]]
    with pytest.raises(ValueError, match="part_id"):
        shards.select_part(uids, 3, 3)
    env = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}
    assert shards.resolve_part(1, 0, env) == shards.DistributedEnv(4, 2, 0, torchrun=True)
    with pytest.raises(ValueError, match="torchrun"):
        shards.resolve_part(2, 1, env)
    assert shards.resolve_part(2, 1, {}).label == "1/2"


def test_two_parts_then_merge_equal_one_process(data, tmp_path):
    root, reference = data
    out, store = tmp_path / "det", tmp_path / "store"
    assert (
        cli.main(argv(root, out, "--work", str(store), "--num_parts", "2", "--part_id", "1")) == 0
    )
    assert not out.exists()  # a part does not merge
    part1 = set(records(store))
    assert part1 == set(DETECTED[1::2])
    with pytest.raises(shards.MergeError, match=r"missing.*" + DETECTED[0]):
        cli.main(argv(root, out, "--work", str(store), "--merge_only"))
    assert (
        cli.main(argv(root, out, "--work", str(store), "--num_parts", "2", "--part_id", "0")) == 0
    )
    assert set(records(store)) == set(DETECTED)
    before = records(store)
    assert cli.main(argv(root, out, "--work", str(store), "--merge_only")) == 0
    assert records(store) == before  # the merge computed nothing
    assert_same_outputs(out, reference)
    metrics = json.loads(out.with_suffix(".json").read_text())
    ref_metrics = json.loads(reference.with_suffix(".json").read_text())
    for key in ("series", "slices", "forwards_total", "forwards_per_slice", "slices_not_used"):
        assert metrics[key] == ref_metrics[key], key
    assert metrics["parts"] == 2


def test_killed_run_resumes_to_the_same_result_and_leaves_no_temporaries(
    data, tmp_path, monkeypatch
):
    root, reference = data
    out = tmp_path / "det"
    store = tmp_path / "det.parts"  # the default store beside --out
    real = series.detect_series
    calls = []

    def dies_on_the_second_series(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(series, "detect_series", dies_on_the_second_series)
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv(root, out))
    monkeypatch.undo()
    assert set(records(store)) == {DETECTED[0]} and not out.exists()
    first = records(store)[DETECTED[0]]
    # what a SIGKILL leaves behind: the writers' temporaries and a half-swapped output
    (tmp_path / ".det.k3j9.tmp").mkdir()
    (tmp_path / ".det.k3j9.tmp" / f"{DETECTED[0]}.nii.gz").write_bytes(b"half")
    (tmp_path / ".det.old").mkdir()
    (store / f".{DETECTED[1]}.nii.gz.x1y2.tmp.nii.gz").write_bytes(b"half")
    assert cli.main(argv(root, out)) == 0
    assert records(store)[DETECTED[0]] == first  # resumed, not recomputed
    assert_same_outputs(out, reference)
    leftovers = [p.name for p in [*tmp_path.iterdir(), *store.iterdir()] if p.name.startswith(".")]
    assert leftovers == []
    # a second run recomputes nothing and still gives the same outputs
    assert cli.main(argv(root, out)) == 0
    assert json.loads(out.with_suffix(".json").read_text())["series"] == len(DETECTED)
    assert_same_outputs(out, reference)


def test_merge_refuses_duplicated_and_stale_series_and_recomputes_changed_inputs(data, tmp_path):
    root, reference = data
    store_a, store_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "det"
    assert cli.main(argv(root, out, "--work", str(store_a))) == 0
    store_b.mkdir()
    for suffix in (".nii.gz", ".csv", ".json"):
        name = f"{DETECTED[0]}{suffix}"
        (store_b / name).write_bytes((store_a / name).read_bytes())
    with pytest.raises(shards.MergeError, match=f"several stores: {DETECTED[0]}"):
        cli.main(argv(root, out, "--work", str(store_a), str(store_b), "--merge_only"))
    with pytest.raises(shards.MergeError, match="other settings"):
        cli.main(argv(root, out, "--work", str(store_a), "--merge_only", "--seed", "1"))
    # same params, other numerics (channels_last off): part 0 is recomputed, the mix refused
    part0 = ["--work", str(store_a), "--num_parts", "2", "--part_id", "0"]
    assert cli.main(argv(root, out, *part0, "--no-channels_last")) == 0
    with pytest.raises(shards.MergeError, match="different numerics"):
        cli.main(argv(root, out, "--work", str(store_a), "--merge_only"))
    assert cli.main(argv(root, out, *part0)) == 0  # back to one kind
    # a re-exported PNG changes that series' fingerprint: only it is computed again
    png = next((root / "data/processed/png" / DETECTED[1]).glob("*_mask.png"))
    original = png.read_bytes()
    before = records(store_a)
    try:
        png.write_bytes(original + b"\0")  # same image, other bytes
        assert cli.main(argv(root, out, "--work", str(store_a))) == 0
        after = records(store_a)
        changed = [uid for uid in DETECTED if after[uid] != before[uid]]
        assert changed == [DETECTED[1]]
    finally:
        png.write_bytes(original)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_equal_one_process(data, tmp_path):
    root, reference = data
    out = tmp_path / "det"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(cli.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ichinpaint.cli", *argv(root, out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = {r["part"] for r in records(tmp_path / "det.parts").values()}
    assert parts == {"0/2", "1/2"}
    assert_same_outputs(out, reference)


@pytest.mark.slow
def test_a_sigkilled_process_resumes_to_the_same_result(data, tmp_path):
    import signal
    import time

    root, reference = data
    out, store = tmp_path / "det", tmp_path / "det.parts"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(cli.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ichinpaint.cli", *argv(root, out)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(store.glob("ID_*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no series finished in time"
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = records(store)
    assert 1 <= len(done_before) < len(DETECTED) and not out.exists()
    assert cli.main(argv(root, out)) == 0
    after = records(store)
    assert all(after[uid] == record for uid, record in done_before.items())
    assert_same_outputs(out, reference)
    assert [p.name for p in [*tmp_path.iterdir(), *store.iterdir()] if p.name.startswith(".")] == []
