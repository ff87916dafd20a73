"""The review picture at the CT's native resolution: HU slice in the brain window, map upsampled.

The model grid (64 px by default) is what detection sees; a reader looks at the
512-px CT. The anomaly map, detections and ground truth are brought back onto the
native matrix with `windowing.from_model_grid` (the exact inverse of the png stage's
pad/crop + resize): the map linearly, masks linearly then thresholded at one half,
so outlines are smooth rather than 8-px staircases. Used for pipeline outputs (HU
volumes of the nifti stage) and for predict folders.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ichinpaint.volume import slice_image
from ichinpaint.windowing import brain_window, from_model_grid


def native_ct(nifti_dir: Path, series_uid: str, n_slices: int) -> np.ndarray | None:
    """The series' HU volume in the brain window as ``[k, row, col]`` uint8, or None.

    None when the volume is missing or has another number of slices than the
    manifest (outputs of different runs): the page then falls back to the model grid.
    """
    path = Path(nifti_dir) / f"{series_uid}.nii.gz"
    if not path.is_file():
        return None
    hu = np.asarray(nib.load(path).dataobj)
    if hu.ndim != 3 or hu.shape[2] != n_slices:
        return None
    return np.stack([brain_window(slice_image(hu, k)) for k in range(n_slices)])


def upsample_map(map2d: np.ndarray, canvas: int, native_shape: tuple[int, int]) -> np.ndarray:
    return from_model_grid(np.asarray(map2d, dtype=np.float32), canvas, native_shape, "linear")


def upsample_mask(mask2d: np.ndarray, canvas: int, native_shape: tuple[int, int]) -> np.ndarray:
    soft = from_model_grid(np.asarray(mask2d, dtype=np.float32), canvas, native_shape, "linear")
    return soft >= 0.5


def native_layers(
    anomaly: np.ndarray,
    detections: np.ndarray,
    truth: np.ndarray | None,
    canvas: int,
    native_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One slice's model-grid map, detections and truth on the native matrix."""
    return (
        upsample_map(anomaly, canvas, native_shape),
        upsample_mask(np.asarray(detections) > 0, canvas, native_shape),
        None if truth is None else upsample_mask(truth, canvas, native_shape),
    )
