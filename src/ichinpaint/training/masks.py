"""Inpainting masks for training, drawn so that training matches detection.

Detection hides squares of the grid sizes on the interleaved 9-pass grid
(``ichinpaint.grid``); the model should see those exact patterns during training,
plus free-floating squares inside the brain so it does not learn to rely on the grid
phase alone. Masks are float32 ``(H, W)`` arrays with 1 = hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ichinpaint import grid


def random_squares_mask(
    brain_mask: np.ndarray, sizes: Sequence[int], rng: np.random.Generator, max_squares: int = 3
) -> np.ndarray:
    """1 to `max_squares` squares of one random size, centred on random brain pixels.

    Squares are shifted to lie fully inside the image; with an empty brain mask the
    centres are drawn anywhere in the image.
    """
    height, width = brain_mask.shape
    size = int(rng.choice(np.asarray(sizes)))
    size = min(size, height, width)
    candidates = np.argwhere(brain_mask > 0)
    if len(candidates) == 0:
        candidates = np.argwhere(np.ones_like(brain_mask, dtype=bool))
    mask = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(1, max_squares + 1))):
        row, col = candidates[rng.integers(len(candidates))]
        top = int(np.clip(row - size // 2, 0, height - size))
        left = int(np.clip(col - size // 2, 0, width - size))
        mask[top : top + size, left : left + size] = 1.0
    return mask


def grid_pass_for_training(
    brain_mask: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
) -> grid.GridPass:
    """A random detection pattern (size, half-square shifts, pass) that hides some brain.

    Detection skips passes that touch no brain, so training draws among the others;
    an empty brain mask falls back to any pass of the drawn size.
    """
    size = int(rng.choice(np.asarray(sizes)))
    passes = grid.all_passes([size], offsets=True)
    touching = [p for p, _ in grid.passes_touching(brain_mask, passes)]
    pool = touching or passes
    return pool[int(rng.integers(len(pool)))]


def training_mask(
    brain_mask: np.ndarray,
    sizes: Sequence[int],
    grid_fraction: float,
    rng: np.random.Generator,
    max_squares: int = 3,
) -> np.ndarray:
    """One training mask: a grid pass with probability `grid_fraction`, else random squares."""
    if not sizes:
        raise ValueError("sizes must name at least one square size")
    if rng.random() < grid_fraction:
        grid_pass = grid_pass_for_training(brain_mask, sizes, rng)
        return grid.pass_mask(brain_mask.shape[0], grid_pass).astype(np.float32)
    return random_squares_mask(brain_mask, sizes, rng, max_squares=max_squares)
