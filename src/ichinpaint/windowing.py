"""CT display window and the slice geometry of the model grid.

Everything that turns a native CT slice into what the model sees lives here, so that
the png stage (training/test images), the evaluate stage (ground-truth lesion masks)
and anyone mapping an anomaly map back onto the native slice use the same numbers:

1. `brain_window`: HU -> uint8 with the study's brain window (centre 40, width 80).
2. `pad_or_crop_square`: centre pad/crop to a ``canvas x canvas`` square. Pixels keep
   their size (no scaling here), so anatomy keeps its proportions whatever the matrix.
3. Area resize of the canvas to ``img_size x img_size`` (`to_model_grid`);
   `from_model_grid` is the inverse (upsample, then undo the pad/crop).
4. `model_grid_affine`: a native volume's affine carried onto the model grid (the
   detect stage's maps are written with it).

Area resampling is written as two small overlap matrices (out x in) applied on each
side of the image: it is exact for any ratio (each output pixel is the mean of the
input area it covers) and needs no image library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ichinpaint.constants import BRAIN_WINDOW_CENTER, BRAIN_WINDOW_WIDTH

ResizeMode = Literal["area", "nearest"]
UpsampleMode = Literal["linear", "nearest"]


def brain_window(
    hu: np.ndarray,
    center: float = BRAIN_WINDOW_CENTER,
    width: float = BRAIN_WINDOW_WIDTH,
) -> np.ndarray:
    """Map HU to uint8 so that ``center - width/2`` -> 0 and ``center + width/2`` -> 255, clipped.

    With the defaults, 0 HU -> 0 and 80 HU -> 255: air, fat, bone all saturate and
    the 80 HU that separate CSF, brain and blood use the whole 8-bit range.
    """
    low = center - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float64) - low) * (255.0 / width)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _centre_offsets(size: int, canvas: int) -> tuple[int, int]:
    """(source start, destination start) of the centred overlap of `size` and `canvas`.

    Padding puts the extra pixel (odd difference) after the image, cropping removes
    it after the kept part; the inverse in `from_model_grid` uses the same numbers.
    """
    if size >= canvas:
        return (size - canvas) // 2, 0
    return 0, (canvas - size) // 2


def pad_or_crop_square(image: np.ndarray, canvas: int, fill: float = 0) -> np.ndarray:
    """Centre `image` (``[row, col]``) on a ``canvas x canvas`` square, padding with `fill`.

    Each axis is handled on its own: longer than `canvas` -> centre crop, shorter ->
    centre pad. Pixels are copied, never rescaled, so proportions are kept.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D [row, col] image, got shape {image.shape}")
    if canvas < 1:
        raise ValueError(f"canvas must be a positive number of pixels, got {canvas}")
    out = np.full((canvas, canvas), fill, dtype=image.dtype)
    src_r, dst_r = _centre_offsets(image.shape[0], canvas)
    src_c, dst_c = _centre_offsets(image.shape[1], canvas)
    n_r = min(image.shape[0], canvas)
    n_c = min(image.shape[1], canvas)
    out[dst_r : dst_r + n_r, dst_c : dst_c + n_c] = image[src_r : src_r + n_r, src_c : src_c + n_c]
    return out


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: row i holds the share of each input pixel in output pixel i.

    Rows sum to 1, so ``W @ x`` averages `x` over each output pixel's footprint; this
    is OpenCV's INTER_AREA for downsampling, written exactly for any ratio.
    """
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index sampled by each output pixel: the one under the output pixel's centre."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(centres).astype(int), n_in - 1)


def resize(image: np.ndarray, shape: tuple[int, int], mode: ResizeMode = "area") -> np.ndarray:
    """Resize a 2-D image to `shape` by area averaging (float64) or nearest sampling (same dtype)."""
    image = np.asarray(image)
    rows, cols = shape
    if mode == "nearest":
        return image[
            np.ix_(nearest_indices(image.shape[0], rows), nearest_indices(image.shape[1], cols))
        ]
    if mode == "area":
        w_r = area_weights(image.shape[0], rows)
        w_c = area_weights(image.shape[1], cols)
        return w_r @ image.astype(np.float64) @ w_c.T
    raise ValueError(f"unknown resize mode {mode!r}; use 'area' or 'nearest'")


def to_model_grid(
    image2d: np.ndarray,
    canvas: int,
    img_size: int,
    mode: ResizeMode = "area",
    fill: float = 0,
) -> np.ndarray:
    """Bring a native ``[row, col]`` slice onto the model grid: pad/crop to `canvas`, resize.

    - ``mode="area"`` (images): each model pixel is the mean of the canvas pixels it
      covers; uint8 input comes back as rounded uint8, anything else as float64.
      For a binary mask, ``to_model_grid(mask.astype(float), ...) > 0.5`` is the
      area-majority rule.
    - ``mode="nearest"`` (label masks, e.g. lesion subtype codes 0..5): values are
      sampled, never mixed, and keep their dtype.

    `fill` is the value outside the native image (0 = black in the brain window).
    """
    square = pad_or_crop_square(image2d, canvas, fill=fill)
    out = resize(square, (img_size, img_size), mode=mode)
    if mode == "area" and square.dtype == np.uint8:
        return np.rint(out).clip(0, 255).astype(np.uint8)
    return out


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix with pixel centres aligned (edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
    left = np.floor(pos).astype(int)
    right = np.minimum(left + 1, n_in - 1)
    frac = pos - left
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), left), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), right), frac)
    return weights


def from_model_grid(
    map2d: np.ndarray,
    canvas: int,
    native_shape: tuple[int, int],
    mode: UpsampleMode = "linear",
    fill: float = 0,
) -> np.ndarray:
    """Inverse of `to_model_grid`: a model-grid map back onto the native ``[row, col]`` matrix.

    Upsamples ``img_size -> canvas`` (``"linear"``: float64, ``"nearest"``: same dtype),
    then undoes the centre pad/crop: what was padding is cut away, what was cropped
    off (never seen by the model) gets `fill`.
    """
    map2d = np.asarray(map2d)
    if mode == "linear":
        w_r = _linear_weights(map2d.shape[0], canvas)
        w_c = _linear_weights(map2d.shape[1], canvas)
        square = w_r @ map2d.astype(np.float64) @ w_c.T
    elif mode == "nearest":
        square = resize(map2d, (canvas, canvas), mode="nearest")
    else:
        raise ValueError(f"unknown upsample mode {mode!r}; use 'linear' or 'nearest'")
    rows, cols = native_shape
    out = np.full((rows, cols), fill, dtype=square.dtype)
    # The same offsets as the forward pad/crop, with source and destination swapped.
    dst_r, src_r = _centre_offsets(rows, canvas)
    dst_c, src_c = _centre_offsets(cols, canvas)
    n_r = min(rows, canvas)
    n_c = min(cols, canvas)
    out[dst_r : dst_r + n_r, dst_c : dst_c + n_c] = square[src_r : src_r + n_r, src_c : src_c + n_c]
    return out


def midrange_fraction(
    hu: np.ndarray,
    brain_mask: np.ndarray,
    center: float = BRAIN_WINDOW_CENTER,
    width: float = BRAIN_WINDOW_WIDTH,
) -> float:
    """The study's "mid-range" measure of how much brain a slice shows.

    Defined as: the number of pixels that lie inside the brain mask **and** whose HU
    is strictly inside the window (``center - width/2 < HU < center + width/2``, i.e.
    0 < HU < 80 by default: neither black nor white in the PNG), divided by the total
    number of pixels of the native slice. Slices at the skull base or vertex (mostly
    bone, air or nothing) score near 0 and are left out of training and detection.
    """
    hu = np.asarray(hu)
    brain = np.asarray(brain_mask).astype(bool)
    if hu.shape != brain.shape:
        raise ValueError(f"image shape {hu.shape} and brain mask shape {brain.shape} differ")
    low, high = center - width / 2.0, center + width / 2.0
    inside = brain & (hu > low) & (hu < high)
    return float(inside.sum() / hu.size) if hu.size else 0.0


def model_grid_affine(
    source_affine: np.ndarray, native_shape: Sequence[int], canvas: int, img_size: int
) -> np.ndarray:
    """The source volume's affine for voxels of the model grid (pad/crop to `canvas`, resize).

    Model pixel ``c'`` covers canvas pixels around ``scale * c' + (scale - 1) / 2``,
    and canvas pixel ``c`` is native pixel ``c + src - dst`` (the png stage's centring).
    """
    scale = canvas / img_size
    to_native = np.eye(4)
    for axis in (0, 1):  # axis 0 = column, axis 1 = row (data[col, row, k])
        src, dst = _centre_offsets(int(native_shape[axis]), canvas)
        to_native[axis, axis] = scale
        to_native[axis, 3] = (scale - 1) / 2 + src - dst
    return np.asarray(source_affine, dtype=float) @ to_native
