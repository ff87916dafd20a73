"""The inpainting grid shared by training and detection.

A grid of squares of side `size` tiles the image, starting at 0 or, with a
half-square offset, at `size // 2` (the strip before the first origin is covered by a
partial square). Rows and columns are shifted independently, so with offsets there
are four grids per size: (0, 0), (0, s/2), (s/2, 0), (s/2, s/2). The squares are hidden in 9 interleaved passes: pass ``(a, b)`` hides
every square ``(i, j)`` with ``i % 3 == a`` and ``j % 3 == b``, so each hidden square
keeps its eight neighbours visible and every pixel is hidden exactly once per
(size, offset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

N_PASSES = 9


@dataclass(frozen=True)
class GridPass:
    """One inpainting pattern: the squares of one size/offset hidden in one pass."""

    size: int
    shift_rows: bool
    shift_cols: bool
    pass_index: int  # 0..8, = 3 * (i % 3) + (j % 3)


def square_index(img_size: int, size: int, offset: bool) -> np.ndarray:
    """Index of the grid square each coordinate (along one axis) falls into."""
    if size < 1:
        raise ValueError(f"square size must be >= 1, got {size}")
    shift = size // 2 if offset else 0
    coords = np.arange(img_size)
    # With a shift, coordinates before it form square 0 (partial), the rest follow.
    return (coords - shift + size) // size if shift else coords // size


def pass_mask(img_size: int, grid_pass: GridPass) -> np.ndarray:
    """Boolean ``(img_size, img_size)`` mask of the pixels hidden in `grid_pass`."""
    row_idx = square_index(img_size, grid_pass.size, grid_pass.shift_rows)
    col_idx = square_index(img_size, grid_pass.size, grid_pass.shift_cols)
    a, b = divmod(grid_pass.pass_index, 3)
    rows = row_idx % 3 == a
    cols = col_idx % 3 == b
    return rows[:, None] & cols[None, :]


def all_passes(sizes: Sequence[int], offsets: bool) -> list[GridPass]:
    """Every (size, shift, pass) pattern of the detection grid, in a fixed order."""
    shifts = (
        [(False, False), (False, True), (True, False), (True, True)]
        if offsets
        else [(False, False)]
    )
    return [GridPass(s, sr, sc, p) for s in sizes for sr, sc in shifts for p in range(N_PASSES)]


def passes_touching(
    brain_mask: np.ndarray, passes: Sequence[GridPass]
) -> Iterator[tuple[GridPass, np.ndarray]]:
    """The passes whose hidden region overlaps the brain, with their masks.

    Passes that hide no brain pixel cannot change the anomaly map inside the brain,
    so detection skips them.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    for grid_pass in passes:
        mask = pass_mask(brain.shape[0], grid_pass)
        if np.any(mask & brain):
            yield grid_pass, mask


@dataclass(frozen=True)
class GridPlan:
    """Which (slice, pass) patterns to re-paint, and which grid each pass belongs to."""

    passes: list[GridPass]
    masks: np.ndarray  # (n_passes, H, W) bool
    grid_of_pass: np.ndarray  # (n_passes,) int: index of its (size, shift) grid
    n_grids: int
    items: np.ndarray  # (n_items, 2) int: (used-slice position, pass id)


def plan_grid(brains: np.ndarray, sizes: Sequence[int], offsets: bool) -> GridPlan:
    """All patterns of the detection grid that hide some brain, for every used slice."""
    img_size = brains.shape[-1]
    passes = all_passes(sizes, offsets)
    pass_id = {gp: i for i, gp in enumerate(passes)}
    grid_keys = list(dict.fromkeys((gp.size, gp.shift_rows, gp.shift_cols) for gp in passes))
    grid_of_pass = np.array(
        [grid_keys.index((gp.size, gp.shift_rows, gp.shift_cols)) for gp in passes]
    )
    masks = np.stack([pass_mask(img_size, gp) for gp in passes])
    items = [
        (s, pass_id[gp])
        for s, brain in enumerate(brains)
        for gp, _ in passes_touching(brain > 0, passes)
    ]
    return GridPlan(
        passes=passes,
        masks=masks,
        grid_of_pass=grid_of_pass,
        n_grids=len(grid_keys),
        items=np.array(items, dtype=np.int64).reshape(-1, 2),
    )
