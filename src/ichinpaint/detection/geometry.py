"""Where detection's maps sit in space: the model-grid volume and its affine.

The maps are written as ``data[col, row, k]`` float32 volumes (`volume.stack_slices`)
with the source HU volume's affine carried onto the model grid
(`windowing.model_grid_affine`), so a viewer overlays them on the CT.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ichinpaint import volume
from ichinpaint.windowing import model_grid_affine


def series_volume(maps: np.ndarray, slice_index: Sequence[int], n_slices: int) -> np.ndarray:
    """The ``data[col, row, k]`` float32 volume with the used slices' maps, zeros elsewhere."""
    img_size = maps.shape[-1]
    slices = [np.zeros((img_size, img_size), np.float32) for _ in range(n_slices)]
    for m, k in zip(maps, slice_index, strict=True):
        slices[k] = m.astype(np.float32)
    return volume.stack_slices(slices).astype(np.float32)


def series_affine(
    uid: str, nifti_dir: Path | None, canvas: int | None, img_size: int, n_slices: int
) -> np.ndarray:
    """The source volume's affine on the model grid, or the identity when no source is given."""
    if nifti_dir is None or canvas is None:
        return np.eye(4)
    path = nifti_dir / f"{uid}.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source volume of series {uid} is missing (nifti stage)")
    header = nib.load(path)
    if header.shape[2] != n_slices:
        raise ValueError(f"{path}: {header.shape[2]} slices but slices.csv says {n_slices}")
    return model_grid_affine(header.affine, header.shape, canvas, img_size)
