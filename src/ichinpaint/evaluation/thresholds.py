"""Thresholds chosen on healthy validation series, and only there.

The decision thresholds are what the test numbers depend on most, so they must
never see test data. That is made structural: the choosing functions accept a
`HealthyValidation` only, and a `HealthyValidation` refuses to exist if any of
its slices is not from the ``val`` split or carries a hemorrhage label.

Two modes (param ``threshold_mode``):

- ``percentile``: the pixel threshold is the `percentile`-th percentile of
  post-processed healthy validation anomaly values inside the (eroded) brain; a
  slice is called positive when at least one detection (component of
  ``min_component_px`` or more, after the optional 3-D check) survives on it.
- ``fpr``: additionally a slice threshold on the `reduction` score is set so that at
  most `target_fpr` of healthy validation slices score above it; a slice is positive
  when its score is above. Pixel detections (Dice, outlines, false-positive
  components) still use the percentile pixel threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MODES: tuple[str, ...] = ("percentile", "fpr")


@dataclass(frozen=True)
class HealthyValidation:
    """What threshold selection may see: healthy validation slices and their values.

    `pixel_values`: post-processed anomaly values inside the brain (pooled, possibly
    subsampled); `slice_scores`: one reduction score per slice; `splits` and
    `any_labels`: per slice, checked here so test or diseased data cannot slip in.
    """

    pixel_values: np.ndarray
    slice_scores: np.ndarray
    splits: np.ndarray
    any_labels: np.ndarray
    series_uids: tuple[str, ...] = field(default=())
    # The location normaliser fitted on the same series (evaluation.normalize), if any:
    # pixel values and scores above are already divided by it.
    normalizer: object = None

    def __post_init__(self) -> None:
        splits = np.asarray(self.splits).astype(str)
        labels = np.asarray(self.any_labels)
        if len(splits) != len(self.slice_scores) or len(labels) != len(self.slice_scores):
            raise ValueError(
                "HealthyValidation: splits, any_labels and slice_scores need one entry per slice"
            )
        if (splits != "val").any():
            bad = sorted(set(splits[splits != "val"]))
            raise ValueError(
                f"HealthyValidation got slices from split(s) {bad}: only 'val' allowed"
            )
        if (labels != 0).any():
            raise ValueError(
                f"HealthyValidation got {int((labels != 0).sum())} slice(s) labelled with hemorrhage"
            )


@dataclass(frozen=True)
class Thresholds:
    """The chosen decision rule; every number here goes into metrics/reports/detection.json."""

    mode: str
    pixel_threshold: float
    slice_threshold: float
    decision_score: str  # "detected_px" (percentile mode) or the reduction name (fpr mode)

    def slice_positive(self, detected_px: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Per-slice decision from detected pixel counts and reduction scores."""
        if self.mode == "fpr":
            return np.asarray(score, dtype=float) > self.slice_threshold
        return np.asarray(detected_px) > self.slice_threshold


def pixel_threshold(validation: HealthyValidation, percentile: float) -> float:
    """The `percentile`-th percentile of healthy validation pixel values."""
    _require(validation)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    values = np.asarray(validation.pixel_values, dtype=float)
    if values.size == 0:
        raise ValueError("no healthy validation brain pixels to choose a pixel threshold on")
    return float(np.percentile(values, percentile))


def slice_threshold(validation: HealthyValidation, target_fpr: float) -> float:
    """Lowest score threshold with at most `target_fpr` of healthy slices strictly above it."""
    _require(validation)
    if not 0 <= target_fpr < 1:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    scores = np.sort(np.asarray(validation.slice_scores, dtype=float))[::-1]
    if scores.size == 0:
        raise ValueError("no healthy validation slices to choose a slice threshold on")
    allowed = int(np.floor(target_fpr * scores.size))
    return float(scores[allowed])


def choose_thresholds(
    validation: HealthyValidation,
    *,
    mode: str,
    percentile: float,
    target_fpr: float,
    reduction: str,
) -> Thresholds:
    """The decision rule of `mode` (see the module docstring), from validation only."""
    if mode not in MODES:
        raise ValueError(f"threshold_mode must be one of {MODES}, got {mode!r}")
    pixel = pixel_threshold(validation, percentile)
    if mode == "fpr":
        return Thresholds(mode, pixel, slice_threshold(validation, target_fpr), reduction)
    return Thresholds(mode, pixel, 0.0, "detected_px")


def _require(validation: object) -> None:
    if not isinstance(validation, HealthyValidation):
        raise TypeError(
            f"thresholds are chosen on a HealthyValidation only, got {type(validation).__name__}"
        )
