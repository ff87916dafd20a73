"""One series of the evaluate stage: read its maps, post-process, score, measure.

The per-series step of `ichinpaint.evaluation.pipeline`, and the one the review app
calls for the series on screen. `evaluate_series` returns the slice table, the pixel
statistics and, on request (`SeriesTask.keep`), the post-processed arrays themselves,
so the gallery and the app draw what was measured instead of computing it again.
Everything is picklable for `parallel_map`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ichinpaint import manifest
from ichinpaint.evaluation import gallery, truth
from ichinpaint.evaluation.normalize import Normalizer, cell_index
from ichinpaint.evaluation.postprocess import (
    erode_mask,
    load_detection,
    postprocess_series,
    slice_scores,
)
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import Thresholds
from ichinpaint.scores import COMPONENT_SCORE, component_score

# Pixel values kept per series (a fixed random subset) for the validation percentile
# and for the test pixel curves; Dice and component counts always use every pixel.
# Bounds memory on thousands of real series.
MAX_VALIDATION_PIXELS_PER_SERIES = 20_000
MAX_PIXELS_PER_SERIES = 200_000

# Which post-processed slices `evaluate_series` hands back: none, those that could be
# in the gallery (the series' own best per category: the gallery's picks over all series
# are among them), or all of them (the review app).
KEEP = ("none", "gallery", "all")


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
    keep: str = "none"

    def with_choices(self, **changes: Any) -> SeriesTask:
        return replace(self, **changes)


@dataclass(frozen=True)
class SeriesArrays:
    """Post-processed slices of a series, stacked ``[n, row, col]`` on the model grid.

    `image_ids` names the slices held (all of them in slice order, or the gallery's
    candidates); `truth` is None without ground truth, else a bool stack (all False on
    slices it does not cover).
    """

    image_ids: tuple[str, ...]
    cleaned: np.ndarray
    labels: np.ndarray
    truth: np.ndarray | None

    def index(self, image_id: str) -> int:
        return self.image_ids.index(image_id)


@dataclass(frozen=True)
class SeriesResult:
    """What `evaluate_series` found on one series."""

    series_uid: str
    slices: pd.DataFrame  # one row per slice: scores, detected_px, n_components, fp_<kind>
    pixels: dict[str, Any] | None  # score/truth samples and Dice counts, with ground truth
    arrays: SeriesArrays | None  # as `SeriesTask.keep` asked


# ---------------------------------------------------------------- inputs


def read_manifest(path: Path) -> pd.DataFrame:
    """The png stage's slices.csv, checked for the columns evaluation relies on."""
    return manifest.read(path, manifest.FOR_EVALUATION)


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


def subsample(values: np.ndarray, limit: int, key: str) -> np.ndarray:
    """At most `limit` values, the same ones on every run (seeded by the series uid)."""
    if values.shape[-1] <= limit:
        return values
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    keep = np.sort(np.random.default_rng(seed).choice(values.shape[-1], limit, replace=False))
    return values[..., keep]


# ---------------------------------------------------------------- per series


def postprocess(
    task: SeriesTask, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cleaned map, component labels, brain masks, eroded masks) of a series."""
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
    joined = subsample(joined, MAX_VALIDATION_PIXELS_PER_SERIES, task.series_uid)
    return {"values": joined[0], "cells": joined[1].astype(int)}


def validation_values(task: SeriesTask) -> dict[str, Any]:
    """Pooled brain pixel values and per-slice scores of one healthy validation series."""
    cleaned, _, _, eroded = postprocess(task, threshold=np.inf)
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
        "pixels": subsample(values, MAX_VALIDATION_PIXELS_PER_SERIES, task.series_uid),
        "scores": np.asarray(scores, dtype=float),
        "rows": used[["image_id", "split", "any"]],
    }


def decide_slices(table: pd.DataFrame, thresholds: Thresholds, reduction: str) -> pd.DataFrame:
    """`table` (manifest rows with their scores) with ``score`` (the reduction) and
    ``predicted`` (the decision rule, used slices only)."""
    table = table.copy()
    table["score"] = table[reduction].astype(float)
    table["predicted"] = (
        thresholds.slice_positive(table["detected_px"], table["score"]) & table["use"]
    )
    return table


def evaluate_series(task: SeriesTask) -> SeriesResult:
    """Scores, decision inputs, components and pixel statistics of one series at the thresholds."""
    assert task.thresholds is not None, "evaluate_series needs chosen thresholds"
    cleaned, labels, masks, eroded = postprocess(task, task.thresholds.pixel_threshold)
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
    slices = pd.DataFrame(records)
    pixels = None
    if lesions is not None:
        joined = (
            np.stack([np.concatenate(pixel_scores), np.concatenate(pixel_truth)])
            if pixel_scores
            else np.zeros((2, 0))
        )
        joined = subsample(joined, MAX_PIXELS_PER_SERIES, task.series_uid)
        pixels = {"score": joined[0], "truth": joined[1].astype(bool), **counts}
    kept = _kept_slices(task, slices)
    arrays = None if kept is None else _arrays(task, kept, cleaned, labels, lesions)
    return SeriesResult(task.series_uid, slices, pixels, arrays)


def _kept_slices(task: SeriesTask, slices: pd.DataFrame) -> list[str] | None:
    """Image IDs whose arrays `task.keep` asks for (None: no arrays)."""
    if task.keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {task.keep!r}")
    if task.keep == "none":
        return None
    if task.keep == "all":
        return list(task.rows["image_id"])
    table = task.rows.drop(columns=["slice_index"]).merge(slices, on="image_id", how="left")
    table = decide_slices(table, task.thresholds, task.settings.reduction)
    picks = gallery.select_examples(table[table["use"]], task.settings.gallery_per_category)
    return list(dict.fromkeys(picks["image_id"]))


def _arrays(
    task: SeriesTask,
    image_ids: list[str],
    cleaned: np.ndarray,
    labels: np.ndarray,
    lesions: dict[str, np.ndarray] | None,
) -> SeriesArrays:
    at = dict(zip(task.rows["image_id"], task.rows["slice_index"].astype(int), strict=True))
    ks = [at[i] for i in image_ids]
    shape = (len(ks), *cleaned.shape[1:])
    truth_stack = None
    if lesions is not None:
        truth_stack = np.zeros(shape, dtype=bool)
        for n, image_id in enumerate(image_ids):
            if image_id in lesions:
                truth_stack[n] = lesions[image_id]
    return SeriesArrays(tuple(image_ids), cleaned[ks], labels[ks], truth_stack)


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
