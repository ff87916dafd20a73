"""The evaluate stage's work, with plain arguments (the stage module only parses params).

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

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ichinpaint import manifest
from ichinpaint.constants import LABELS, SUBTYPES
from ichinpaint.evaluation import calibration, gallery, metrics, plots, submission, truth
from ichinpaint.evaluation.normalize import Normalizer, cell_index, fit_normalizer
from ichinpaint.evaluation.postprocess import (
    erode_mask,
    load_detection,
    postprocess_series,
    slice_scores,
)
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import HealthyValidation, Thresholds, choose_thresholds
from ichinpaint.io import parallel_map, read_json, write_csv, write_json
from ichinpaint.scores import COMPONENT_SCORE, component_score

# Pixel values kept per series (a fixed random subset) for the validation percentile
# and for the test pixel curves; Dice and component counts always use every pixel.
# Bounds memory on thousands of real series.
MAX_VALIDATION_PIXELS_PER_SERIES = 20_000
MAX_PIXELS_PER_SERIES = 200_000


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
class SeriesTask:
    """One series' inputs, picklable for `parallel_map`."""

    series_uid: str
    rows: pd.DataFrame  # that series' manifest rows, sorted by slice_index
    detection: Path
    ground_truth: Path  # <ground_truth>/<series_uid>; may not exist
    root: Path
    settings: Settings
    thresholds: Thresholds | None = None
    lesion_masks: truth.LesionMaskDir | None = None
    normalizer: Normalizer | None = None


# ---------------------------------------------------------------- inputs


def read_manifest(path: Path) -> pd.DataFrame:
    """The png stage's slices.csv, checked for the columns evaluation relies on."""
    frame = manifest.read(path, manifest.FOR_EVALUATION)
    return frame


def load_series(task: SeriesTask) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly ``[k, row, col]``, brain masks ``[k, row, col]``) of a series, shapes checked."""
    if not task.detection.exists():
        raise FileNotFoundError(
            f"{task.detection}: no detection volume for series {task.series_uid}"
        )
    anomaly = load_detection(task.detection)
    n_slices = int(task.rows["n_slices"].iloc[0])
    size = task.settings.img_size
    if anomaly.shape != (n_slices, size, size):
        raise ValueError(
            f"{task.detection}: volume has {anomaly.shape[0]} slices of {anomaly.shape[1:]}, "
            f"expected {n_slices} slices of ({size}, {size}) from slices.csv and img_size"
        )
    masks = np.zeros_like(anomaly, dtype=bool)
    for row in task.rows.itertuples():
        masks[int(row.slice_index)] = manifest.read_mask(task.root / row.mask_path, size)
    return anomaly, masks


def load_truth(task: SeriesTask) -> dict[str, np.ndarray] | None:
    """Lesion mask per image ID on the model grid, or None where the series has none.

    User masks (``lesion_masks``) win over the synthetic ground truth; either way slices
    are matched by image ID (evaluation.truth).
    """
    s = task.settings
    if task.lesion_masks is not None:
        by_slice = dict(
            zip(task.rows["slice_index"].astype(int), task.rows["image_id"], strict=True)
        )
        return task.lesion_masks.series_truth(task.series_uid, by_slice, s.canvas, s.img_size)
    return truth.synthetic_truth(task.ground_truth, s.canvas, s.img_size)


def _subsample(values: np.ndarray, limit: int, key: str) -> np.ndarray:
    """At most `limit` values, the same ones on every run (seeded by the series uid)."""
    if values.shape[-1] <= limit:
        return values
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    keep = np.sort(np.random.default_rng(seed).choice(values.shape[-1], limit, replace=False))
    return values[..., keep]


# ---------------------------------------------------------------- per series


def _postprocess(
    task: SeriesTask, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = task.settings
    anomaly, masks = load_series(task)
    if task.normalizer is not None:
        anomaly = task.normalizer.apply(anomaly, masks)
    cleaned, labels = postprocess_series(
        anomaly,
        masks,
        erosion_px=s.erosion_px,
        median_size=s.median_size,
        threshold=threshold,
        min_component_px=s.min_component_px,
        consistency=s.consistency_3d,
    )
    eroded = np.stack([erode_mask(m, s.erosion_px) for m in masks])
    return cleaned, labels, masks, eroded


def normalizer_values(task: SeriesTask) -> dict[str, np.ndarray]:
    """Raw map values and their location cells on one healthy validation series (to fit on)."""
    anomaly, masks = load_series(task)
    used = task.rows.loc[task.rows["use"], "slice_index"].astype(int).to_numpy()
    cells = cell_index(masks)[used]
    inside = cells >= 0
    joined = np.stack([anomaly[used][inside], cells[inside].astype(np.float32)])
    joined = _subsample(joined, MAX_VALIDATION_PIXELS_PER_SERIES, task.series_uid)
    return {"values": joined[0], "cells": joined[1].astype(int)}


def validation_values(task: SeriesTask) -> dict[str, Any]:
    """Pooled brain pixel values and per-slice scores of one healthy validation series."""
    cleaned, _, _, eroded = _postprocess(task, threshold=math.inf)
    used = task.rows[task.rows["use"]]
    pixels, scores = [], []
    for row in used.itertuples():
        k = int(row.slice_index)
        pixels.append(cleaned[k][eroded[k]])
        values = slice_scores(cleaned[k], eroded[k])
        no_detections = np.zeros(cleaned[k].shape, np.int32)  # threshold inf: none exist yet
        values[COMPONENT_SCORE] = component_score(
            cleaned[k], no_detections, values["score_top1pct"]
        )
        scores.append(values[task.settings.reduction])
    values = np.concatenate(pixels) if pixels else np.zeros(0, np.float32)
    return {
        "pixels": _subsample(values, MAX_VALIDATION_PIXELS_PER_SERIES, task.series_uid),
        "scores": np.asarray(scores, dtype=float),
        "rows": used[["image_id", "split", "any"]],
    }


def evaluate_series(task: SeriesTask) -> dict[str, Any]:
    """Scores, decisions inputs, components and pixel statistics of one series at the thresholds."""
    assert task.thresholds is not None, "evaluate_series needs chosen thresholds"
    cleaned, labels, masks, eroded = _postprocess(task, task.thresholds.pixel_threshold)
    lesions = load_truth(task)
    mimics = truth.mimic_labels(task.ground_truth, task.settings.canvas, task.settings.img_size)
    records, pixel_scores, pixel_truth = [], [], []
    counts = {"intersection": 0.0, "pred": 0.0, "true": 0.0}
    for row in task.rows.itertuples():
        k = int(row.slice_index)
        record = {"image_id": row.image_id, "slice_index": k}
        record.update(slice_scores(cleaned[k], eroded[k]))
        record[COMPONENT_SCORE] = component_score(cleaned[k], labels[k], record["score_top1pct"])
        record["detected_px"] = int((labels[k] > 0).sum())
        record["n_components"] = len(np.unique(labels[k])) - 1
        record.update(_fp_kind_counts(labels[k], masks[k], mimics, row, task.settings))
        records.append(record)
        if lesions is None or not row.use:
            continue
        if row.image_id not in lesions:
            if task.lesion_masks is not None:  # a user mask may cover part of a series
                continue
            raise ValueError(f"{task.ground_truth}/ids.json has no slice for image {row.image_id}")
        inside = masks[k]
        pixel_scores.append(cleaned[k][inside])
        pixel_truth.append(lesions[row.image_id][inside])
        counts["intersection"] += float(((labels[k] > 0) & lesions[row.image_id]).sum())
        counts["pred"] += float((labels[k] > 0).sum())
        counts["true"] += float(lesions[row.image_id].sum())
    result: dict[str, Any] = {"series_uid": task.series_uid, "slices": pd.DataFrame(records)}
    if lesions is not None:
        joined = (
            np.stack([np.concatenate(pixel_scores), np.concatenate(pixel_truth)])
            if pixel_scores
            else np.zeros((2, 0))
        )
        joined = _subsample(joined, MAX_PIXELS_PER_SERIES, task.series_uid)
        result["pixels"] = {"score": joined[0], "truth": joined[1].astype(bool), **counts}
    return result


def _fp_kind_counts(
    labels: np.ndarray,
    brain: np.ndarray,
    mimics: dict[str, np.ndarray] | None,
    row: Any,
    settings: Settings,
) -> dict[str, int]:
    """Components on a healthy slice, counted by what they lie on (``fp_<kind>`` columns)."""
    counts = dict.fromkeys((f"fp_{kind}" for kind in truth.FP_KINDS), 0)
    if int(row.any) or not row.use:
        return counts
    mimic = None if mimics is None else mimics.get(row.image_id)
    for kind in truth.attribute_components(labels, brain, mimic, settings.rim_px):
        counts[f"fp_{kind}"] += 1
    return counts


# ---------------------------------------------------------------- the stage


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
        tasks = [with_choices(t, normalizer=normalizer) for t in tasks]
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


def run_evaluation(paths: Paths, settings: Settings) -> dict[str, Any]:
    """Everything the stage writes; returns the metrics dict."""
    settings.check()
    frame = read_manifest(paths.slices)
    validation = healthy_validation(frame, paths, settings)
    thresholds = choose_thresholds(
        validation,
        mode=settings.threshold_mode,
        percentile=settings.percentile,
        target_fpr=settings.target_fpr,
        reduction=settings.reduction,
    )
    chosen = {"thresholds": thresholds, "normalizer": validation.normalizer}
    val_tasks = [
        with_choices(t, **chosen)
        for t in series_tasks(frame[frame["split"] == "val"], paths, settings)
    ]
    test_tasks = [
        with_choices(t, **chosen)
        for t in series_tasks(frame[frame["split"] == "test"], paths, settings)
    ]
    if not test_tasks:
        raise ValueError(f"{paths.slices}: no test series to evaluate")
    val_results = parallel_map(
        evaluate_series,
        val_tasks,
        n_jobs=settings.n_jobs,
        desc="validation at threshold",
        unit="series",
    )
    test_results = parallel_map(
        evaluate_series, test_tasks, n_jobs=settings.n_jobs, desc="test series", unit="series"
    )

    test = _slice_table(frame[frame["split"] == "test"], test_results, thresholds, settings)
    val = _slice_table(frame[frame["split"] == "val"], val_results, thresholds, settings)
    test = _add_probabilities(test, settings)

    result = {}
    result.update(_threshold_metrics(thresholds, settings, validation, val))
    if validation.normalizer is not None:  # what predict must apply too (decision.json)
        result["location_normalizer"] = validation.normalizer.to_json()
    result.update(_slice_metrics(test))
    result.update(_pixel_metrics(test_results, paths.plots))
    result.update(_component_metrics(test))
    result.update(_logloss_metrics(test))
    result.update(_counts(test, test_results))
    result["seconds_per_series"] = _seconds_per_series(paths.detect_metrics)
    plots.write_curves(paths.plots, "slice", *_used_curve_inputs(test))
    write_csv(
        paths.submission, submission.submission_frame(list(test["image_id"]), _label_matrix(test))
    )
    _write_gallery(test, test_tasks, thresholds, paths.gallery, settings)
    result = {
        key: metrics.nan_to_none(v) if isinstance(v, float) else v for key, v in result.items()
    }
    write_json(paths.metrics, result)
    return result


def with_choices(task: SeriesTask, **changes: Any) -> SeriesTask:
    return SeriesTask(**{**task.__dict__, **changes})


def _slice_table(
    manifest: pd.DataFrame,
    results: list[dict[str, Any]],
    thresholds: Thresholds,
    settings: Settings,
) -> pd.DataFrame:
    """Manifest rows joined with their scores and decisions (one row per image)."""
    if not results:
        return manifest.assign(score=[], predicted=[], detected_px=[], n_components=[])
    scores = pd.concat([r["slices"] for r in results], ignore_index=True)
    table = manifest.drop(columns=["slice_index"]).merge(
        scores, on="image_id", how="left", validate="one_to_one"
    )
    if table["detected_px"].isna().any():
        raise ValueError(
            "some manifest slices got no scores: detection volumes and slices.csv disagree"
        )
    table["score"] = table[settings.reduction].astype(float)
    table["predicted"] = (
        thresholds.slice_positive(table["detected_px"], table["score"]) & table["use"]
    )
    return table


def _add_probabilities(test: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    groups = test["patient_id"].to_numpy()
    p_any = calibration.crossfit_probabilities(
        test["score"].to_numpy(), test["any"].to_numpy(), groups, n_splits=settings.n_splits
    )
    shares = calibration.crossfit_subtype_shares(
        test[list(SUBTYPES)].to_numpy(), test["any"].to_numpy(), groups, n_splits=settings.n_splits
    )
    probs = submission.label_probabilities(p_any, shares)
    return test.assign(**{f"p_{label}": probs[:, j] for j, label in enumerate(LABELS)})


def _label_matrix(test: pd.DataFrame) -> np.ndarray:
    return test[[f"p_{label}" for label in LABELS]].to_numpy()


def _used_curve_inputs(test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    used = test[test["use"]]
    return used["any"].to_numpy(), used["score"].to_numpy()


def _threshold_metrics(
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


def _slice_metrics(test: pd.DataFrame) -> dict[str, float]:
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


def _pixel_metrics(results: list[dict[str, Any]], plot_dir: Path) -> dict[str, float]:
    """Pixel-level metrics over test series with ground truth; nothing when there is none."""
    with_truth = [r["pixels"] for r in results if "pixels" in r]
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


def _component_metrics(test: pd.DataFrame) -> dict[str, float]:
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


def _logloss_metrics(test: pd.DataFrame) -> dict[str, float]:
    labels_true = test[list(LABELS)].to_numpy()
    return {
        "rsna_weighted_logloss_any": metrics.binary_logloss(test["any"], test["p_any"]),
        "rsna_weighted_logloss": metrics.rsna_weighted_logloss(labels_true, _label_matrix(test)),
        "logloss_eps": metrics.LOGLOSS_EPS,
    }


def _counts(test: pd.DataFrame, results: list[dict[str, Any]]) -> dict[str, int]:
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


def _seconds_per_series(path: Path) -> float:
    if not path.exists():
        raise FileNotFoundError(f"{path}: detect metrics not found (run the detect stage)")
    value = read_json(path).get("seconds_per_series")
    if value is None:
        raise ValueError(f"{path}: no seconds_per_series")
    return float(value)


def _write_gallery(
    test: pd.DataFrame,
    tasks: list[SeriesTask],
    thresholds: Thresholds,
    out_dir: Path,
    settings: Settings,
) -> None:
    """Overlay PNGs of the chosen examples; one explanatory PNG when there are none."""
    from ichinpaint.io import atomic_dir

    examples = gallery.select_examples(test[test["use"]], settings.gallery_per_category)
    by_uid = {t.series_uid: t for t in tasks}
    vmax = max(2.0 * thresholds.pixel_threshold, 0.05)
    with atomic_dir(out_dir) as tmp:
        if examples.empty:
            gallery.render_message(tmp / "no_examples.png", "no detections or bleeds to show")
            return
        for uid, group in examples.groupby("series_uid", sort=True):
            task = by_uid[uid]
            cleaned, labels, _, _ = _postprocess(task, thresholds.pixel_threshold)
            lesions = load_truth(task)
            for row in group.itertuples():
                k = int(task.rows.loc[task.rows["image_id"] == row.image_id, "slice_index"].iloc[0])
                ct = manifest.read_png(task.root / row.image_path)
                gallery.render_overlay(
                    tmp / f"{row.category}_{row.image_id}.png",
                    ct,
                    cleaned[k],
                    labels[k],
                    None if lesions is None else lesions.get(row.image_id),
                    title=f"{row.category}  {row.image_id}  score {row.score:.3g}",
                    vmax=vmax,
                )
