"""From re-painted squares to one anomaly map per slice, and from maps to slice scores.

Units: the brain window in [0, 1] (1.0 = 80 HU), so a map value of 0.25 means the
re-painted healthy guess differs from the real pixel by 20 HU. Model images live in
[-1, 1], hence the division by 2.

Each (square size, shift) grid hides every brain pixel in exactly one of its 9
passes, so that grid's map is the difference from that one pass; the grids are then
combined (``max`` or ``mean``). Outside the brain the map is zero by definition.
"""

from __future__ import annotations

import numpy as np
import torch

COMBINE_MODES: tuple[str, ...] = ("max", "mean")
AREA_LEVELS: tuple[float, ...] = (0.1, 0.2)
SCORE_COLUMNS: tuple[str, ...] = (
    "score_max",
    "score_mean",
    "score_top1pct",
    *(f"score_area_{level:g}" for level in AREA_LEVELS),
)


def difference_in_window_units(original: torch.Tensor, inpainted: torch.Tensor) -> torch.Tensor:
    """|original - inpainted| with [-1, 1] model images, in [0, 1] brain-window units."""
    return (original - inpainted).abs() / 2


def combine_grids(per_grid: torch.Tensor, how: str) -> torch.Tensor:
    """Combine ``(..., n_grids, H, W)`` maps over the grid axis (-3) by `how`."""
    if how == "max":
        return per_grid.amax(dim=-3)
    if how == "mean":
        return per_grid.mean(dim=-3)
    raise ValueError(f"unknown combine mode {how!r}; choose one of {COMBINE_MODES}")


def slice_scores(anomaly: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Slice-level scores over the brain pixels of one map.

    ``score_top1pct`` is the mean of the highest 1 % of brain pixels (at least one
    pixel): less noisy than the maximum, still sensitive to a small bleed.
    ``score_area_<level>`` is the fraction of brain pixels above that level.
    A slice without brain pixels scores 0 everywhere.
    """
    values = np.asarray(anomaly, dtype=np.float64)[np.asarray(brain, dtype=bool)]
    if values.size == 0:
        return dict.fromkeys(SCORE_COLUMNS, 0.0)
    top = max(1, int(np.ceil(values.size * 0.01)))
    scores = {
        "score_max": float(values.max()),
        "score_mean": float(values.mean()),
        "score_top1pct": float(np.sort(values)[-top:].mean()),
    }
    for level in AREA_LEVELS:
        scores[f"score_area_{level:g}"] = float((values > level).mean())
    return scores
