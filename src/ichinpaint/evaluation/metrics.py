"""Metric functions that stay defined on degenerate inputs.

Every experiment is judged by these numbers, so each one has a fixed answer when
its inputs are degenerate instead of a crash or a warning: a quantity that is
undefined (AUROC with one class, sensitivity without positives, Dice of two empty
masks) is ``nan``, which the stage writes as JSON ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as _sk_roc_curve

from ichinpaint.constants import LABELS

# Clipping of probabilities in the log loss. The competition's scorer is
# sklearn.metrics.log_loss, whose historical eps is 1e-15; we clip to
# [LOGLOSS_EPS, 1 - LOGLOSS_EPS] the same way.
LOGLOSS_EPS: float = 1e-15
# RSNA weights: 1 for each subtype, 2 for "any" (LABELS order).
RSNA_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 2.0)


def _binary(y_true: Sequence | np.ndarray) -> np.ndarray:
    return np.asarray(y_true).astype(bool).ravel()


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def auroc(y_true: Sequence | np.ndarray, score: Sequence | np.ndarray) -> float:
    """Area under the ROC curve; nan unless both classes are present."""
    y = _binary(y_true)
    if not _both_classes(y):
        return math.nan
    return float(roc_auc_score(y, np.asarray(score, dtype=float).ravel()))


def average_precision(y_true: Sequence | np.ndarray, score: Sequence | np.ndarray) -> float:
    """Average precision (area under the step PR curve); nan without positives.

    With positives only it is 1.0 (every prediction is a hit).
    """
    y = _binary(y_true)
    if y.sum() == 0:
        return math.nan
    if y.all():
        return 1.0
    return float(average_precision_score(y, np.asarray(score, dtype=float).ravel()))


def sensitivity(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """TP / (TP + FN); nan without positives."""
    y, p = _binary(y_true), _binary(y_pred)
    return float(p[y].mean()) if y.any() else math.nan


def specificity(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """TN / (TN + FP); nan without negatives."""
    y, p = _binary(y_true), _binary(y_pred)
    return float((~p[~y]).mean()) if (~y).any() else math.nan


def dice_from_counts(intersection: float, pred_sum: float, true_sum: float) -> float:
    """2|A∩B| / (|A| + |B|) from pooled counts; nan when both masks are empty."""
    total = pred_sum + true_sum
    return float(2.0 * intersection / total) if total > 0 else math.nan


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; nan when both are empty (nothing to agree on)."""
    a, b = _binary(pred), _binary(truth)
    return dice_from_counts(float((a & b).sum()), float(a.sum()), float(b.sum()))


def best_dice(y_true: Sequence | np.ndarray, score: Sequence | np.ndarray) -> float:
    """Best Dice over all thresholds of `score` (= best F1 on the PR curve).

    Chosen with the labels it is scored on, so it is an upper bound, never a result.
    nan without positives.
    """
    y = _binary(y_true)
    if not y.any():
        return math.nan
    precision, recall, _ = precision_recall_curve(y, np.asarray(score, dtype=float).ravel())
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def binary_logloss(
    y_true: Sequence | np.ndarray, prob: Sequence | np.ndarray, eps: float = LOGLOSS_EPS
) -> float:
    """Mean binary cross-entropy with probabilities clipped to [eps, 1 - eps]; nan if empty."""
    y = _binary(y_true).astype(float)
    if y.size == 0:
        return math.nan
    p = np.clip(np.asarray(prob, dtype=float).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rsna_weighted_logloss(y_true: np.ndarray, prob: np.ndarray, eps: float = LOGLOSS_EPS) -> float:
    """The competition metric: per-label log losses weighted 1,1,1,1,1,2 (LABELS order).

    `y_true` and `prob` are ``(n_images, 6)`` in LABELS order. Restricted to the
    "any" column the weights cancel and it is `binary_logloss` of that column.
    """
    y_true, prob = np.asarray(y_true, dtype=float), np.asarray(prob, dtype=float)
    if y_true.shape != prob.shape or y_true.ndim != 2 or y_true.shape[1] != len(LABELS):
        raise ValueError(f"expected (n, {len(LABELS)}) arrays, got {y_true.shape} and {prob.shape}")
    if y_true.shape[0] == 0:
        return math.nan
    losses = [binary_logloss(y_true[:, j], prob[:, j], eps) for j in range(len(LABELS))]
    weights = np.asarray(RSNA_WEIGHTS)
    return float(np.dot(weights, losses) / weights.sum())


def _subsample_curve(points: dict[str, np.ndarray], max_points: int) -> dict[str, np.ndarray]:
    """Evenly spaced rows of a curve, first and last always kept (curves stay anchored)."""
    n = len(next(iter(points.values())))
    if n <= max_points:
        return points
    keep = np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))
    return {name: values[keep] for name, values in points.items()}


def roc_points(
    y_true: Sequence | np.ndarray, score: Sequence | np.ndarray, max_points: int = 500
) -> dict[str, np.ndarray]:
    """ROC curve as columns fpr, tpr, threshold (at most `max_points` rows); empty if one class."""
    y = _binary(y_true)
    if not _both_classes(y):
        return {"fpr": np.array([]), "tpr": np.array([]), "threshold": np.array([])}
    fpr, tpr, thr = _sk_roc_curve(y, np.asarray(score, dtype=float).ravel())
    thr = np.where(np.isfinite(thr), thr, np.nan)
    return _subsample_curve({"fpr": fpr, "tpr": tpr, "threshold": thr}, max_points)


def pr_points(
    y_true: Sequence | np.ndarray, score: Sequence | np.ndarray, max_points: int = 500
) -> dict[str, np.ndarray]:
    """PR curve as columns recall, precision, threshold; empty without positives."""
    y = _binary(y_true)
    if not y.any():
        return {"recall": np.array([]), "precision": np.array([]), "threshold": np.array([])}
    precision, recall, thr = precision_recall_curve(y, np.asarray(score, dtype=float).ravel())
    # sklearn gives one threshold fewer than points (the final point has none).
    thr = np.append(thr, np.nan)
    return _subsample_curve(
        {"recall": recall, "precision": precision, "threshold": thr}, max_points
    )


def nan_to_none(value: float) -> float | None:
    """JSON has no NaN: undefined metrics are written as null."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
