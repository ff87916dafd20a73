"""Slice-level reductions of an anomaly map, shared by detect (scores.csv) and evaluate.

Units: brain-window units (1.0 = 80 HU of difference).
"""

from __future__ import annotations

import numpy as np

# Levels at which `slice_scores` reports the fraction of brain above.
AREA_LEVELS: tuple[float, ...] = (0.1, 0.2)
SCORE_NAMES: tuple[str, ...] = (
    "score_max",
    "score_mean",
    "score_top1pct",
    *(f"score_area_{level}" for level in AREA_LEVELS),
)


def slice_scores(anomaly: np.ndarray, brain_mask: np.ndarray) -> dict[str, float]:
    """Reductions of one slice's map to single numbers (evaluate's `reduction` picks one).

    ``score_max`` and ``score_mean`` over brain pixels; ``score_top1pct`` = mean of
    the highest 1 % of brain pixels (at least one pixel), steadier than the max and
    still sensitive to a small bleed; ``score_area_<level>`` = fraction of brain pixels
    above that level. A slice with an empty brain mask scores 0 everywhere: there is
    nothing to flag on it.
    """
    values = np.asarray(anomaly, dtype=np.float64)[np.asarray(brain_mask) > 0]
    if values.size == 0:
        return dict.fromkeys(SCORE_NAMES, 0.0)
    n_top = max(1, int(np.ceil(0.01 * values.size)))
    top = np.partition(values, values.size - n_top)[values.size - n_top :]
    scores = {
        "score_max": float(values.max()),
        "score_mean": float(values.mean()),
        "score_top1pct": float(top.mean()),
    }
    for level in AREA_LEVELS:
        scores[f"score_area_{level}"] = float((values > level).mean())
    return scores


# A slice score from the post-processed detections (evaluate only: it needs the pixel
# threshold and the components): slices with a surviving detection rank above every
# slice without one, by their largest component's anomaly mass (sum of its values);
# the others rank by their top-1% value, squeezed into [0, 1).
COMPONENT_SCORE = "score_components"
REDUCTIONS: tuple[str, ...] = (*SCORE_NAMES, COMPONENT_SCORE)


def component_score(anomaly: np.ndarray, labels: np.ndarray, top1pct: float) -> float:
    """`COMPONENT_SCORE` of one slice: 1 + largest component mass, or top1pct / (1 + top1pct)."""
    labels = np.asarray(labels)
    if labels.max(initial=0) > 0:
        masses = np.bincount(labels.ravel(), weights=np.asarray(anomaly, np.float64).ravel())
        return float(1.0 + masses[1:].max())
    top = max(float(top1pct), 0.0)
    return top / (1.0 + top)
