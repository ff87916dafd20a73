"""From re-painted squares to one anomaly map per slice (slice scores: ichinpaint.scores).

Units: the brain window in [0, 1] (1.0 = 80 HU), so a map value of 0.25 means the
re-painted healthy guess differs from the real pixel by 20 HU. Model images live in
[-1, 1], hence the division by 2.

Each (square size, shift) grid hides every brain pixel in exactly one of its 9
passes, so that grid's map is the difference from that one pass; the grids are then
combined (``max`` or ``mean``). Outside the brain the map is zero by definition.
"""

from __future__ import annotations

import torch

COMBINE_MODES: tuple[str, ...] = ("max", "mean")
# absolute: any difference; positive: only where the real slice is brighter than its
# healthy re-painting. Acute blood is hyperdense, while the healthy variants that fool
# unsigned detectors (cysts, atrophy, old infarcts) are hypodense.
SIGNS: tuple[str, ...] = ("absolute", "positive")


def difference_in_window_units(
    original: torch.Tensor, inpainted: torch.Tensor, sign: str = "absolute"
) -> torch.Tensor:
    """original - inpainted (per `sign`) with [-1, 1] model images, in [0, 1] window units."""
    diff = (original - inpainted) / 2
    if sign == "absolute":
        return diff.abs()
    if sign == "positive":
        return diff.clamp(min=0)
    raise ValueError(f"unknown sign {sign!r}; choose one of {SIGNS}")


def combine_grids(per_grid: torch.Tensor, how: str) -> torch.Tensor:
    """Combine ``(..., n_grids, H, W)`` maps over the grid axis (-3) by `how`."""
    if how == "max":
        return per_grid.amax(dim=-3)
    if how == "mean":
        return per_grid.mean(dim=-3)
    raise ValueError(f"unknown combine mode {how!r}; choose one of {COMBINE_MODES}")
