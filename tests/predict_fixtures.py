"""A stage_2_test-like folder, a tiny model and a decision artifact, for the predict tests."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
from model_fixtures import tiny_inpainter

from ichinpaint import model
from ichinpaint.constants import LABELS
from ichinpaint.detection.record import file_sha256, settings_record
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.evaluation.decision import build_decision, fit_calibrator, write_decision
from ichinpaint.evaluation.thresholds import Thresholds
from ichinpaint.synthetic import write_dataset

IMG_SIZE = 16
CANVAS = 128  # the synthetic matrix: the png stage's canvas for this data


def write_model(folder: Path) -> Path:
    module, spec = tiny_inpainter(IMG_SIZE)
    path = folder / "inpainter.ckpt"
    model.save_inpainter(path, module.state_dict(), spec)
    return path


def write_decision_for(
    folder: Path, model_path: Path, calibration_series: tuple[str, ...] = ("ID_calib00001",)
) -> Path:
    """A decision as evaluate would write it: a low pixel threshold so something is flagged."""
    # The settings of the old DetectSettings defaults that this fixture did not set.
    settings = DetectSettings(
        strategy="onestep",
        noise_levels=(0.5,),
        sizes=(64,),
        offsets=False,
        combine="max",
        batch_size=64,
        seed=0,
        ddim_steps=50,
        sign="absolute",
        hu_gate=False,
        canvas=CANVAS,
    )
    record = settings_record(settings, img_size=IMG_SIZE, model_sha256=file_sha256(model_path))
    rng = np.random.default_rng(0)
    n = 60
    y = (rng.random(n) < 0.4).astype(int)
    scores = rng.random(n) * 0.1 + 0.3 * y
    labels = np.zeros((n, len(LABELS)), int)
    labels[:, -1] = y
    labels[y == 1, 1] = 1  # intraparenchymal
    calibrator = fit_calibrator(
        scores,
        labels,
        np.array([f"P{i % 6}" for i in range(n)]),
        np.array([calibration_series[i % len(calibration_series)] for i in range(n)]),
        score_name="score_top1pct",
    )
    decision = build_decision(
        canvas=CANVAS,
        img_size=IMG_SIZE,
        detect=record,
        erosion_px=0,
        median_size=1,
        min_component_px=2,
        consistency_3d=False,
        thresholds=Thresholds("percentile", 0.05, 0.0, "detected_px"),
        reduction="score_top1pct",
        calibrator=calibrator,
    )
    path = folder / "decision.json"
    write_decision(path, decision)
    return path


def write_test_like_folder(folder: Path, scratch: Path, n_patients: int = 4, seed: int = 7) -> dict:
    """Synthetic DICOMs shuffled into sub-folders under meaningless names, no CSV.

    Returns the image IDs per series (from the generator's own label CSV, read before
    it is dropped) and the number of files.
    """
    write_dataset(scratch, n_patients=n_patients, n_slices=6, matrix=CANVAS, seed=seed, sheet=False)
    files = sorted((scratch / "stage_2_train").glob("*.dcm"))
    random.Random(seed).shuffle(files)
    for i, path in enumerate(files):
        target = folder / f"part{i % 2}" / f"img_{i:04d}"  # no .dcm, not the image ID
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return {
        "n_files": len(files),
        "image_ids": sorted(p.stem for p in files),
        "series_csv": scratch / "ground_truth" / "series.csv",
    }
