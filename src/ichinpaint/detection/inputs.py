"""Detection's inputs: the slice manifest and the model-grid PNGs of a series.

Everything is read through `ichinpaint.manifest` (columns, types, PNG checks), so a
PNG the png stage did not write, or of the wrong size, is named in the error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ichinpaint import manifest


def read_manifest(path: str | Path, splits: Sequence[str]) -> pd.DataFrame:
    """The png stage's slices.csv restricted to `splits`, every series complete, sorted."""
    table = manifest.read(path, manifest.FOR_DETECTION, splits=splits)
    manifest.check_complete_series(table, path)
    return table.sort_values(["series_uid", "slice_index"]).reset_index(drop=True)


def read_model_scale(path: Path, img_size: int | None = None) -> np.ndarray:
    """A brain-window PNG in the model's scale: [0, 255] -> [-1, 1] float32."""
    return manifest.read_png(path, img_size).astype(np.float32) / 127.5 - 1


@dataclasses.dataclass
class SeriesImages:
    """The used slices of one series as model inputs: images in [-1, 1], brain masks {0, 1}."""

    image: np.ndarray  # (n_used, H, W) float32
    brain: np.ndarray  # (n_used, H, W) float32 0/1
    above: np.ndarray
    below: np.ndarray
    slice_index: list[int]


def load_series_images(rows: pd.DataFrame, root: Path, img_size: int) -> SeriesImages:
    """Read the PNGs of the used slices of one series (rows of the manifest)."""
    used = rows[rows["use"]]

    def model_scale(column: str) -> np.ndarray:
        stack = [read_model_scale(root / p, img_size) for p in used[column]]
        return np.stack(stack) if stack else _empty(img_size)

    masks = [manifest.read_mask(root / p, img_size) for p in used["mask_path"]]
    brain = np.stack(masks).astype(np.float32) if masks else _empty(img_size)
    return SeriesImages(
        image=model_scale("image_path"),
        brain=brain,
        above=model_scale("above_path"),
        below=model_scale("below_path"),
        slice_index=[int(k) for k in used["slice_index"]],
    )


def _empty(img_size: int) -> np.ndarray:
    return np.zeros((0, img_size, img_size), np.float32)


def manifest_png_size(table: pd.DataFrame, root: Path) -> int:
    """Side of the manifest's (square) model-grid PNGs: the grid when no model says it."""
    return int(manifest.read_png(root / str(table["image_path"].iloc[0])).shape[0])
