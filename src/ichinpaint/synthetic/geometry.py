"""Scanner geometry of a synthetic series: 5 mm axial slabs, optionally gantry-tilted.

Everything is in DICOM patient coordinates (LPS mm). A slice is a slab of
`SLAB_MM` along its normal; its image is the mean of `SUBPLANES` planes through the
slab, which is how a 5 mm CT slice of a 1 mm world is formed (partial volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichinpaint import volume

SLAB_MM = 5.0
SUBPLANES = 5


@dataclass(frozen=True)
class SeriesGeometry:
    """IPP per slice (in ascending position along the normal), IOP, spacing and matrix."""

    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # DICOM order: (row spacing, column spacing)
    iop: tuple[float, ...]
    ipps: np.ndarray  # (n_slices, 3), slice order k

    @property
    def normal(self) -> np.ndarray:
        return volume.slice_normal(self.iop)

    @property
    def n_slices(self) -> int:
        return len(self.ipps)

    def affine_ras(self) -> np.ndarray:
        """The affine the nifti stage computes from these headers (sorted IPP, mean step)."""
        step = volume.mean_slice_step(self.ipps)
        return volume.affine_ras(self.ipps[0], self.iop, self.pixel_spacing, step)

    def points(self, k: int, stride: int = 1) -> np.ndarray:
        """LPS points of slice k's sub-planes, shape (SUBPLANES, rows', cols', 3).

        With `stride` > 1 only every stride-th pixel (corners kept), for coarse passes
        whose results are upsampled bilinearly with `upsample`.
        """
        rows_idx = _grid_indices(self.rows, stride)
        cols_idx = _grid_indices(self.cols, stride)
        iop = np.asarray(self.iop, float)
        row_spacing, col_spacing = self.pixel_spacing
        offsets = (np.arange(SUBPLANES) - (SUBPLANES - 1) / 2) * (SLAB_MM / SUBPLANES)
        p = (
            self.ipps[k]
            + offsets[:, None, None, None] * self.normal
            + rows_idx[None, :, None, None] * row_spacing * iop[3:]
            + cols_idx[None, None, :, None] * col_spacing * iop[:3]
        )
        return p


def _grid_indices(n: int, stride: int) -> np.ndarray:
    if stride == 1:
        return np.arange(n, dtype=float)
    return np.linspace(0, n - 1, (n - 1) // stride + 2)


def upsample(coarse: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear upsampling of (..., rows', cols') made by `points(stride=...)` to full size.

    Coarse samples sit at linspace(0, n - 1) (corners aligned, see `_grid_indices`);
    bilinear interpolation is separable, so it is two small matrix products.
    """
    lead, (n_rows, n_cols) = coarse.shape[:-2], coarse.shape[-2:]
    wr = _linear_weights(n_rows, rows)
    wc = _linear_weights(n_cols, cols)
    # Two plain 2-D products (batched matmul is far slower for these shapes).
    across = coarse.reshape(-1, n_cols) @ wc.T  # (batch * n_rows, cols)
    across = across.reshape(-1, n_rows, cols).transpose(1, 0, 2).reshape(n_rows, -1)
    full = (wr @ across).reshape(rows, -1, cols).transpose(1, 0, 2)
    return full.reshape(*lead, rows, cols)


def _linear_weights(n_coarse: int, n_full: int) -> np.ndarray:
    """(n_full, n_coarse) linear interpolation matrix, corners aligned."""
    pos = np.linspace(0, n_coarse - 1, n_full)
    low = (
        np.minimum(np.floor(pos).astype(int), n_coarse - 2)
        if n_coarse > 1
        else np.zeros(n_full, int)
    )
    frac = pos - low
    w = np.zeros((n_full, n_coarse))
    w[np.arange(n_full), low] = 1 - frac
    if n_coarse > 1:
        w[np.arange(n_full), low + 1] += frac
    return w


def axial_geometry(
    rng: np.random.Generator,
    n_slices: int,
    rows: int,
    cols: int,
    centre_z: float,
    tilt_deg: float = 0.0,
    min_fov_mm: float = 0.0,
) -> SeriesGeometry:
    """A head CT stack: field of view 220-250 mm, square pixels, 5 mm between slices.

    The field of view (across the shorter side) is widened to `min_fov_mm` when the head
    needs it: scanners pad outside the reconstruction circle, and a head cut by the
    circle is not something a real series shows.

    With a gantry tilt the image plane is rotated about the x axis (as real RSNA files
    show: IOP = [1, 0, 0, 0, cos, -sin]) while the table moves along z, so IPP steps
    along z by 5 mm / cos(tilt) and the slices stay 5 mm apart along their normal.
    """
    fov = max(rng.uniform(220, 250), min_fov_mm)
    spacing = round(float(fov / min(rows, cols)), 6)
    tilt = np.radians(tilt_deg)
    # Rounded as the header will store them, so geometry computed here and by a reader agree.
    iop = (1.0, 0.0, 0.0, 0.0, round(float(np.cos(tilt)), 6), round(float(-np.sin(tilt)), 6))
    table_step = SLAB_MM / np.cos(tilt)
    x0 = -spacing * (cols - 1) / 2 + rng.uniform(-5, 5)
    y0 = -spacing * (rows - 1) / 2 * np.cos(tilt) + rng.uniform(-5, 5)
    z_first = centre_z - table_step * (n_slices - 1) / 2
    # The image centre sits on the table axis; a tilted plane's centre is offset in z.
    z_first -= -np.sin(tilt) * spacing * (rows - 1) / 2
    ipps = np.array([[x0, y0, z_first + k * table_step] for k in range(n_slices)])
    ipps = np.round(ipps, 6)
    return SeriesGeometry(rows, cols, (spacing, spacing), iop, ipps)
