"""Hounsfield units on the model grid: what the brain-window PNG throws away.

The PNG clips everything above 80 HU to white, so to the model a calcification
(150-400 HU) or bone partial volume looks like blood (50-90 HU). The int16 HU volume
still knows the difference. Two uses, both written here so they agree:

- the ``hu_threshold`` baseline (no model): the share of each model pixel's native
  pixels whose HU lies in the acute-blood band;
- the HU gate of the diffusion detectors: the anomaly map is multiplied by the share of
  native pixels inside a wider "could be blood" band, so a difference that sits on
  bone, calcification, air or fat counts for nothing.

Both are area fractions on the model grid (the png stage's pad/crop and area resize),
so they are in [0, 1] and a model pixel half covered by blood gets 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ichinpaint.volume import slice_image
from ichinpaint.windowing import to_model_grid

# Acute blood, from the literature (DESIGN.md: 50-90 HU; clotted blood up to ~95):
# the band of the `hu_threshold` baseline. A user may widen or narrow it per scanner.
BASELINE_BAND_HU: tuple[float, float] = (55.0, 95.0)
# The gate keeps anything that could be blood, subacute (35-50) included, and drops
# what cannot be: CSF and fat below, calcification and bone above.
GATE_BAND_HU: tuple[float, float] = (35.0, 100.0)


def band_fraction(
    hu_slice: np.ndarray, band: Sequence[float], canvas: int, img_size: int
) -> np.ndarray:
    """Share (0..1) of native pixels with ``low <= HU <= high`` under each model pixel."""
    low, high = (float(v) for v in band)
    inside = (np.asarray(hu_slice) >= low) & (np.asarray(hu_slice) <= high)
    return to_model_grid(inside.astype(np.float64), canvas, img_size, mode="area").astype(
        np.float32
    )


def load_hu_volume(nifti_dir: Path, series_uid: str) -> np.ndarray:
    """The nifti stage's int16 HU volume ``data[col, row, k]`` of a series, or a clear error."""
    path = Path(nifti_dir) / f"{series_uid}.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: HU volume of series {series_uid} is missing (nifti stage); "
            "HU-based strategies and the HU gate need it"
        )
    return np.asarray(nib.load(path).dataobj)


def series_band_fractions(
    hu_volume: np.ndarray,
    slice_index: Sequence[int],
    band: Sequence[float],
    canvas: int,
    img_size: int,
) -> np.ndarray:
    """`band_fraction` of each listed slice of a volume: ``(len(slice_index), H, W)``."""
    if not len(slice_index):
        return np.zeros((0, img_size, img_size), np.float32)
    return np.stack(
        [band_fraction(slice_image(hu_volume, k), band, canvas, img_size) for k in slice_index]
    )
