"""Volume geometry: the one place that knows how DICOM slices map to NIfTI voxels.

Conventions (docs/architecture.md): a 2-D slice is ``image[row, col]`` as pydicom
gives it; a volume stores ``data[col, row, k]`` with slices sorted by ascending
position along the slice normal; the affine maps ``(col, row, k)`` to RAS mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# DICOM patient coordinates are LPS; NIfTI world coordinates are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal of a slice from ImageOrientationPatient (row cosine x column cosine)."""
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return normal / np.linalg.norm(normal)


def position_along_normal(ipp: Sequence[float], iop: Sequence[float]) -> float:
    """Where a slice lies along its normal (mm): the sort key for stacking."""
    return float(np.dot(np.asarray(ipp, dtype=float), slice_normal(iop)))


def affine_lps(
    first_ipp: Sequence[float],
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """4x4 affine from voxel (col, row, k) to LPS mm.

    `pixel_spacing` is DICOM's (row spacing, column spacing); `slice_step` is the
    LPS vector from one sorted slice's IPP to the next. Using the real step (rather
    than the normal times the spacing) keeps gantry tilt in the affine.
    """
    iop = np.asarray(iop, dtype=float)
    row_spacing, col_spacing = (float(v) for v in pixel_spacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing  # moving along a row = increasing column
    affine[:3, 1] = iop[3:] * row_spacing  # moving down a column = increasing row
    affine[:3, 2] = np.asarray(slice_step, dtype=float)
    affine[:3, 3] = np.asarray(first_ipp, dtype=float)
    return affine


def affine_ras(
    first_ipp: Sequence[float],
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """The same affine in RAS, as NIfTI stores it."""
    return LPS_TO_RAS @ affine_lps(first_ipp, iop, pixel_spacing, slice_step)


def mean_slice_step(positions_lps: np.ndarray) -> np.ndarray:
    """Mean IPP difference between consecutive (already sorted) slices; (0,0,1) for one slice."""
    positions_lps = np.asarray(positions_lps, dtype=float)
    if len(positions_lps) < 2:
        return np.array([0.0, 0.0, 1.0])
    return np.diff(positions_lps, axis=0).mean(axis=0)


def gantry_tilt_deg(iop: Sequence[float], slice_step: Sequence[float]) -> float:
    """Angle between the slice normal and the stacking direction (0 for an untilted stack)."""
    step = np.asarray(slice_step, dtype=float)
    cos = abs(np.dot(slice_normal(iop), step)) / np.linalg.norm(step)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def slice_image(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice `k` of a ``data[col, row, k]`` volume as a ``[row, col]`` image."""
    return np.asarray(volume[:, :, k]).T


def stack_slices(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack ``[row, col]`` images (in slice order) into a ``data[col, row, k]`` volume."""
    return np.stack([np.asarray(im).T for im in images], axis=-1)
