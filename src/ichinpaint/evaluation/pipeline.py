"""The evaluate stage's orchestration, with plain arguments (the stage module only parses params).

Per-series work is `ichinpaint.evaluation.series`, the metrics `evaluation.report`, the
overlays `evaluation.gallery`; this module runs them in order and writes the outputs.

Order of events, which is what keeps test data out of every choice:

1. healthy **validation** series are post-processed and pooled into a
   `HealthyValidation`; thresholds are chosen on it (`thresholds.choose_thresholds`);
2. validation and test series are post-processed again and thresholded, giving
   per-slice scores and decisions, connected components and, where synthetic
   ground truth exists, pixel statistics;
3. test slices get cross-fitted probabilities (`calibration`), metrics are computed,
   curves, the submission and the gallery are written.

Slices with ``use == False`` (mid-range filter) have all-zero maps. Slice and pixel
metrics are computed on used slices (what the detector looked at), while the
submission and the log losses cover every test image; the counts of unused slices
and of the bleeds among them are reported so nothing disappears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ichinpaint.evaluation import gallery, metrics, plots, report, submission, truth
from ichinpaint.evaluation.normalize import fit_normalizer
from ichinpaint.evaluation.series import (
    SeriesResult,
    SeriesTask,
    evaluate_series,
    normalizer_values,
    read_manifest,
    validation_values,
)
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import HealthyValidation, Thresholds, choose_thresholds
from ichinpaint.io import parallel_map, write_csv, write_json

__all__ = [
    "Evaluation",
    "Paths",
    "healthy_validation",
    "run_evaluation",
    "series_tasks",
    "thresholds_for",
]


@dataclass(frozen=True)
class Paths:
    slices: Path
    detections: Path
    detect_metrics: Path
    ground_truth: Path
    metrics: Path
    plots: Path
    gallery: Path
    submission: Path
    root: Path = Path(".")
    lesion_masks: Path | None = None  # user lesion masks for real data (evaluation.truth)


@dataclass(frozen=True)
class Evaluation:
    """What the stage measured: the metrics written, and the test slices they come from
    (manifest rows with scores, decisions and probabilities), for the decision artifact."""

    metrics: dict[str, Any]
    test: pd.DataFrame


def series_tasks(frame: pd.DataFrame, paths: Paths, settings: Settings) -> list[SeriesTask]:
    masks = truth.LesionMaskDir(paths.lesion_masks) if paths.lesion_masks else None
    tasks = []
    for uid, rows in frame.groupby("series_uid", sort=True):
        tasks.append(
            SeriesTask(
                series_uid=str(uid),
                rows=rows.sort_values("slice_index").reset_index(drop=True),
                detection=paths.detections / f"{uid}.nii.gz",
                ground_truth=paths.ground_truth / str(uid),
                root=paths.root,
                settings=settings,
                lesion_masks=masks,
            )
        )
    return tasks


def healthy_validation(frame: pd.DataFrame, paths: Paths, settings: Settings) -> HealthyValidation:
    """Pool the healthy validation series (``split == val`` and no bleed in the series)."""
    val = frame[frame["split"] == "val"]
    sick = set(val.loc[val["any"] == 1, "series_uid"])
    healthy = val[~val["series_uid"].isin(sick) & val["use"]]
    tasks = series_tasks(healthy, paths, settings)
    if not tasks:
        raise ValueError(
            f"{paths.slices}: no healthy validation slices with use == True to choose thresholds on"
        )
    normalizer = None
    if settings.normalize != "none":
        fit = parallel_map(
            normalizer_values, tasks, n_jobs=settings.n_jobs, desc="normaliser", unit="series"
        )
        normalizer = fit_normalizer(
            settings.normalize,
            np.concatenate([f["values"] for f in fit]),
            np.concatenate([f["cells"] for f in fit]),
        )
        tasks = [t.with_choices(normalizer=normalizer) for t in tasks]
    parts = parallel_map(
        validation_values, tasks, n_jobs=settings.n_jobs, desc="validation series", unit="series"
    )
    rows = pd.concat([p["rows"] for p in parts], ignore_index=True)
    return HealthyValidation(
        pixel_values=np.concatenate([p["pixels"] for p in parts]),
        slice_scores=np.concatenate([p["scores"] for p in parts]),
        splits=rows["split"].to_numpy(),
        any_labels=rows["any"].to_numpy(),
        series_uids=tuple(t.series_uid for t in tasks),
        normalizer=normalizer,
    )


def thresholds_for(validation: HealthyValidation, settings: Settings) -> Thresholds:
    """The thresholds `settings` ask for, chosen on healthy validation only."""
    return choose_thresholds(
        validation,
        mode=settings.threshold_mode,
        percentile=settings.percentile,
        target_fpr=settings.target_fpr,
        reduction=settings.reduction,
    )


def run_evaluation(paths: Paths, settings: Settings) -> Evaluation:
    """Everything the stage writes (but the decision artifact); returns what it measured."""
    settings.check()
    frame = read_manifest(paths.slices)
    validation = healthy_validation(frame, paths, settings)
    thresholds = thresholds_for(validation, settings)
    chosen = {"thresholds": thresholds, "normalizer": validation.normalizer}
    val_rows, test_rows = (frame[frame["split"] == split] for split in ("val", "test"))
    val_tasks = [t.with_choices(**chosen) for t in series_tasks(val_rows, paths, settings)]
    test_tasks = [
        t.with_choices(**chosen, keep="gallery") for t in series_tasks(test_rows, paths, settings)
    ]
    if not test_tasks:
        raise ValueError(f"{paths.slices}: no test series to evaluate")
    val_results = evaluate_all(val_tasks, settings, "validation at threshold")
    test_results = evaluate_all(test_tasks, settings, "test series")

    test = report.slice_table(test_rows, test_results, thresholds, settings)
    val = report.slice_table(val_rows, val_results, thresholds, settings)
    test = report.add_probabilities(test, settings)

    result = {}
    result.update(report.threshold_metrics(thresholds, settings, validation, val))
    if validation.normalizer is not None:  # what predict must apply too (decision.json)
        result["location_normalizer"] = validation.normalizer.to_json()
    result.update(report.slice_metrics(test))
    result.update(report.pixel_metrics(test_results, paths.plots))
    result.update(report.component_metrics(test))
    result.update(report.logloss_metrics(test))
    result.update(report.counts(test, test_results))
    result["seconds_per_series"] = report.seconds_per_series(paths.detect_metrics)
    plots.write_curves(paths.plots, "slice", *report.used_curve_inputs(test))
    write_csv(
        paths.submission,
        submission.submission_frame(list(test["image_id"]), report.label_matrix(test)),
    )
    gallery.write_gallery(
        paths.gallery,
        test,
        {r.series_uid: r.arrays for r in test_results},
        root=paths.root,
        per_category=settings.gallery_per_category,
        pixel_threshold=thresholds.pixel_threshold,
    )
    result = {
        key: metrics.nan_to_none(v) if isinstance(v, float) else v for key, v in result.items()
    }
    write_json(paths.metrics, result)
    return Evaluation(result, test)


def evaluate_all(tasks: list[SeriesTask], settings: Settings, desc: str) -> list[SeriesResult]:
    return parallel_map(evaluate_series, tasks, n_jobs=settings.n_jobs, desc=desc, unit="series")
