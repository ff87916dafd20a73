"""benchmarks/gpu_detector.py rewrites the pipeline's own commands per variant."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_detector as gd  # noqa: E402


def test_options_are_replaced_with_all_their_values_or_appended():
    argv = ["--sizes", "8", "16", "--channels_last", "--seed", "0", "--live_dir", "dvclive/train"]
    out = gd.with_options(argv, {"--sizes": ["4"], "--live_dir": [""], "--lr": ["0.001"]})
    assert out == [
        "--sizes", "4", "--channels_last", "--seed", "0", "--live_dir", "", "--lr", "0.001",
    ]  # fmt: skip


def test_outputs_move_to_the_run_folder_and_inputs_stay():
    argv = ["--slices", "data/processed/slices.csv", "--out", "data/detections",
            "--work", "data/detections.parts", "--model", "models/inpainter.ckpt",
            "--nifti", "data/interim/nifti", "--metrics", "metrics/reports/detect.json"]  # fmt: skip
    out = gd.in_run_folder(argv, Path("runs/x"))
    assert out[1] == "data/processed/slices.csv" and out[9] == "data/interim/nifti"
    assert out[3] == "runs/x/data/detections" and out[5] == "runs/x/data/detections.parts"
    assert out[7] == "runs/x/models/inpainter.ckpt"
    assert out[11] == "runs/x/metrics/reports/detect.json"


def test_table_has_a_row_per_variant_and_notes_for_skipped_ones():
    rows = [
        {"name": "a", "train": {"images_seen": 64, "parameters": 5},
         "detection": {"slice_auroc": 0.812, "sensitivity_subdural": 0.5}},
        {"name": "b", "note": "skipped: 3 s left"},
    ]  # fmt: skip
    lines = gd.markdown(rows).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "0.81" in lines[2] and "n/a/n/a/n/a/n/a/0.50" in lines[2]
    assert lines[3].startswith("| b | skipped: 3 s left |")
    assert lines[3].count("|") == lines[0].count("|")
