"""The whole DVC pipeline, synthesize to evaluate, on tiny params, through `dvc repro`.

Runs in a throw-away git + DVC repository that holds this checkout's dvc.yaml and
.dvc/config (so the real stage definitions and option unpacking are what is tested)
with `src/` and `transforms/` linked in, and shrunken params.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "synthesize": {"n_patients": 8, "n_slices": 6, "matrix": 128, "hemorrhage_fraction": 0.5},
    "png": {"canvas": 128, "img_size": 32},
    "train": {"img_size": 32, "total_image_seen": 64, "batch_size": 8, "val_every": 32},
    "detect": {"sizes": [64], "batch_size": 32, "n_overlays": 2},
    "evaluate": {"gallery_per_category": 1},
}

EXPECTED_KEYS = [
    "slice_auroc",
    "slice_ap",
    "slice_sensitivity",
    "slice_specificity",
    "pixel_auroc",
    "pixel_auprc",
    "dice",
    "dice_upper_bound",
    "fp_components_per_healthy_series",
    "rsna_weighted_logloss_any",
    "seconds_per_series",
] + [
    f"sensitivity_{s}"
    for s in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
]


def _run(cmd: list[str], cwd: Path, *, with_log: bool = False) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr if with_log else proc.stdout


def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for group, values in TINY.items():
        for key, value in values.items():
            assert key in params[group], f"params.yaml has no {group}.{key}"
            params[group][key] = value
    return params


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    for name in ("src", "transforms"):
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    _run(["git", "init", "-q"], work)
    _run(["git", "config", "user.email", "ci@example.invalid"], work)
    _run(["git", "config", "user.name", "ci"], work)
    _run([str(BIN / "dvc"), "init", "-q"], work)
    config = (REPO / ".dvc" / "config").read_text().split("['remote")[0]
    config = config.replace("remote = local", "")
    (work / ".dvc" / "config").write_text(config)
    # DVCLive reads the current git revision: start from a commit, as a clone does.
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "pipeline definition"], work)
    _run([str(BIN / "dvc"), "repro"], work)
    return work


@pytest.mark.slow
def test_repro_writes_detection_metrics_in_range(pipeline: Path):
    metrics = json.loads((pipeline / "metrics" / "reports" / "detection.json").read_text())
    missing = [k for k in EXPECTED_KEYS if k not in metrics]
    assert not missing, f"metrics/reports/detection.json lacks {missing}"
    for key in (
        "slice_auroc",
        "slice_ap",
        "pixel_auroc",
        "pixel_auprc",
        "dice",
        "dice_upper_bound",
    ):
        value = metrics[key]
        assert value is None or 0.0 <= value <= 1.0, (key, value)
    assert (
        metrics["fp_components_per_healthy_series"] is None
        or metrics["fp_components_per_healthy_series"] >= 0
    )
    assert metrics["rsna_weighted_logloss_any"] > 0 and math.isfinite(
        metrics["rsna_weighted_logloss_any"]
    )
    assert (
        metrics["dice_upper_bound"] is None
        or metrics["dice"] is None
        or metrics["dice_upper_bound"] >= metrics["dice"] - 1e-9
    )


@pytest.mark.slow
def test_every_stage_left_its_outputs_and_status_is_clean(pipeline: Path):
    for path in (
        "data/raw/synthetic/stage_2_train.csv",
        "data/interim/slices.csv",
        "data/processed/slices.csv",
        "models/inpainter.ckpt",
        "data/detections/scores.csv",
        "data/submission.csv",
        "metrics/filter.json",
        "metrics/mask.json",
        "metrics/train.json",
        "metrics/detect.json",
        "models/decision.json",
        "models/inpainter.onnx",
        "data/predictions/synth/predict.json",
        "data/predictions/synth_submission.csv",
    ):
        assert (pipeline / path).exists(), path
    filter_metrics = json.loads((pipeline / "metrics" / "reports" / "filter.json").read_text())
    assert filter_metrics["images_total"] == filter_metrics["kept"] + filter_metrics["excluded"]
    headline = json.loads((pipeline / "metrics" / "filter.json").read_text())
    assert headline == {"images": filter_metrics["kept"], "excluded": filter_metrics["excluded"]}
    status = _run([str(BIN / "dvc"), "status", "--json"], pipeline)
    assert json.loads(status) == {}, status


@pytest.mark.slow
def test_predict_stage_scores_the_unlabelled_folder(pipeline: Path):
    import pandas as pd

    counts = json.loads((pipeline / "metrics/reports/predict_synth.json").read_text())
    files = sorted((pipeline / "data/raw/synthetic_test").glob("*.dcm"))
    assert counts["files_total"] == len(files) > 0
    assert counts["series_scored"] == 3 and counts["files_scored"] == len(files)
    submission = pd.read_csv(pipeline / "data/predictions/synth_submission.csv")
    assert len(submission) == 6 * len(files) == counts["submission_rows"]
    decision = json.loads((pipeline / "models" / "decision.json").read_text())
    assert decision["detect"]["model_sha256"] == counts["model_sha256"]


@pytest.mark.slow
def test_an_experiment_changes_the_metrics_dvc_compares(pipeline: Path):
    _run(["git", "add", "-A"], pipeline)
    _run(["git", "commit", "-qm", "baseline"], pipeline)
    log = _run(
        [str(BIN / "dvc"), "exp", "run", "-S", "evaluate.percentile=90"], pipeline, with_log=True
    )
    assert re.findall(r"Running stage '(\w+)'", log) == ["evaluate"], log
    diff = json.loads(_run([str(BIN / "dvc"), "params", "diff", "--json"], pipeline))
    assert diff["params.yaml"]["evaluate.percentile"]["new"] == 90
    metrics_diff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--json"], pipeline))
    assert "metrics/detection.json" in metrics_diff


@pytest.mark.slow
def test_metrics_show_fits_a_terminal(pipeline: Path):
    """Headlines only: one short row per stage, not a column per series or count."""
    table = _run([str(BIN / "dvc"), "metrics", "show"], pipeline)
    assert max(len(line) for line in table.splitlines()) <= 120, table
    shown = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], pipeline))
    for path, values in shown[""]["data"].items():
        assert len(values["data"]) <= 4, (path, values)
