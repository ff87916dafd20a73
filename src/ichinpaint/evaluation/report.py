"""The evaluate stage's report: per-series results assembled into metrics.

Plain functions of the test (and validation) slice tables and the per-series pixel
statistics (`ichinpaint.evaluation.series`); each returns a few flat keys of
``metrics/reports/detection.json``. Undefined values are NaN here (null in the JSON).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ichinpaint.constants import LABELS, SUBTYPES
from ichinpaint.evaluation import calibration, metrics, plots, submission, truth
from ichinpaint.evaluation.series import SeriesResult, decide_slices
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import HealthyValidation, Thresholds
from ichinpaint.io import read_json


def slice_table(
    rows: pd.DataFrame,
    results: list[SeriesResult],
    thresholds: Thresholds,
    settings: Settings,
) -> pd.DataFrame:
    """Manifest rows joined with their scores and decisions (one row per image)."""
    if not results:
        return rows.assign(score=[], predicted=[], detected_px=[], n_components=[])
    scores = pd.concat([r.slices for r in results], ignore_index=True)
    table = rows.drop(columns=["slice_index"]).merge(
        scores, on="image_id", how="left", validate="one_to_one"
    )
    if table["detected_px"].isna().any():
        raise ValueError(
            "some manifest slices got no scores: detection volumes and slices.csv disagree"
        )
    return decide_slices(table, thresholds, settings.reduction)


def add_probabilities(test: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    groups = test["patient_id"].to_numpy()
    p_any = calibration.crossfit_probabilities(
        test["score"].to_numpy(), test["any"].to_numpy(), groups, n_splits=settings.n_splits
    )
    shares = calibration.crossfit_subtype_shares(
        test[list(SUBTYPES)].to_numpy(), test["any"].to_numpy(), groups, n_splits=settings.n_splits
    )
    probs = submission.label_probabilities(p_any, shares)
    return test.assign(**{f"p_{label}": probs[:, j] for j, label in enumerate(LABELS)})


def label_matrix(test: pd.DataFrame) -> np.ndarray:
    return test[[f"p_{label}" for label in LABELS]].to_numpy()


def used_curve_inputs(test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    used = test[test["use"]]
    return used["any"].to_numpy(), used["score"].to_numpy()


def threshold_metrics(
    thresholds: Thresholds, settings: Settings, validation: HealthyValidation, val: pd.DataFrame
) -> dict[str, Any]:
    healthy_val = val[val["series_uid"].isin(validation.series_uids) & val["use"]]
    return {
        "threshold_mode": thresholds.mode,
        "pixel_threshold": thresholds.pixel_threshold,
        "slice_threshold": thresholds.slice_threshold,
        "slice_decision_score": thresholds.decision_score,
        "val_healthy_series": len(validation.series_uids),
        "val_healthy_slices": len(validation.slice_scores),
        "val_slice_fpr": float(healthy_val["predicted"].mean()) if len(healthy_val) else math.nan,
    }


def slice_metrics(test: pd.DataFrame) -> dict[str, float]:
    used = test[test["use"]]
    y, pred = used["any"].to_numpy(), used["predicted"].to_numpy()
    out = {
        "slice_auroc": metrics.auroc(y, used["score"]),
        "slice_ap": metrics.average_precision(y, used["score"]),
        "slice_auroc_calibrated": metrics.auroc(y, used["p_any"]),
        "slice_sensitivity": metrics.sensitivity(y, pred),
        "slice_specificity": metrics.specificity(y, pred),
    }
    for subtype in SUBTYPES:
        out[f"sensitivity_{subtype}"] = metrics.sensitivity(used[subtype].to_numpy(), pred)
    return out


def pixel_metrics(results: list[SeriesResult], plot_dir: Path) -> dict[str, float]:
    """Pixel-level metrics over test series with ground truth; nothing when there is none."""
    with_truth = [r.pixels for r in results if r.pixels is not None]
    if not with_truth:
        empty = np.zeros(0)
        plots.write_curves(plot_dir, "pixel", empty, empty)
        return {}
    score = np.concatenate([p["score"] for p in with_truth])
    is_lesion = np.concatenate([p["truth"] for p in with_truth])
    plots.write_curves(plot_dir, "pixel", is_lesion, score)
    return {
        "pixel_auroc": metrics.auroc(is_lesion, score),
        "pixel_auprc": metrics.average_precision(is_lesion, score),
        "dice": metrics.dice_from_counts(
            sum(p["intersection"] for p in with_truth),
            sum(p["pred"] for p in with_truth),
            sum(p["true"] for p in with_truth),
        ),
        "dice_upper_bound": metrics.best_dice(is_lesion, score),
        "pixel_series_with_truth": len(with_truth),
    }


def component_metrics(test: pd.DataFrame) -> dict[str, float]:
    """False-positive detections (components) per healthy test series."""
    series_any = test.groupby("series_uid")["any"].max()
    healthy = series_any.index[series_any == 0]
    used = test[test["series_uid"].isin(healthy) & test["use"]]
    per_series = used.groupby("series_uid")["n_components"].sum()
    out = {
        "fp_components_per_healthy_series": float(per_series.mean()) if len(healthy) else math.nan,
        "test_healthy_series": len(healthy),
    }
    # The same components by what they lie on (they add up to the figure above).
    for kind in truth.FP_KINDS:
        column = f"fp_{kind}"
        total = float(used[column].sum()) if column in used else 0.0
        out[f"fp_components_{kind}"] = total / len(healthy) if len(healthy) else math.nan
    return out


def logloss_metrics(test: pd.DataFrame) -> dict[str, float]:
    labels_true = test[list(LABELS)].to_numpy()
    return {
        "rsna_weighted_logloss_any": metrics.binary_logloss(test["any"], test["p_any"]),
        "rsna_weighted_logloss": metrics.rsna_weighted_logloss(labels_true, label_matrix(test)),
        "logloss_eps": metrics.LOGLOSS_EPS,
    }


def counts(test: pd.DataFrame, results: list[SeriesResult]) -> dict[str, int]:
    used = test[test["use"]]
    return {
        "test_series": len(results),
        "test_patients": int(test["patient_id"].nunique()),
        "test_slices": len(used),
        "test_positive_slices": int(used["any"].sum()),
        "test_slices_unused": int((~test["use"]).sum()),
        "test_positive_slices_unused": int(test.loc[~test["use"], "any"].sum()),
        "submission_images": len(test),
    }


def seconds_per_series(path: Path) -> float:
    if not path.exists():
        raise FileNotFoundError(f"{path}: detect metrics not found (run the detect stage)")
    value = read_json(path).get("seconds_per_series")
    if value is None:
        raise ValueError(f"{path}: no seconds_per_series")
    return float(value)
