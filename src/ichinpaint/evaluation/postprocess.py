"""Post-processing of anomaly maps: from a raw difference map to detections.

Pure numpy/scipy so the evaluate stage and the review app apply exactly the same
steps. All 2-D arrays are ``[row, col]`` images on the model grid; a series is a
stack ``[k, row, col]`` in slice order (``load_detection`` turns the detect stage's
``data[col, row, k]`` NIfTI into that).

The chain, in order:

1. ``postprocess_slice``: erode the brain mask by ``erosion_px`` (the skull-adjacent
   rim is where inpainting differs most on healthy slices: partial-volume bone and
   mask edges), median-filter the map (``median_size``; isolated hot pixels are
   noise, bleeds are blobs) and zero everything outside the eroded mask.
2. ``detect_components``: threshold, label 8-connected components, drop those
   smaller than ``min_component_px``.
3. optional ``consistency_3d``: a component survives only if it overlaps (same
   pixels) a surviving component on slice ``k - 1`` or ``k + 1``. Bleeds at 5 mm
   spacing nearly always span two slices; noise rarely repeats in place. It removes
   bleeds confined to one slice, so it is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ichinpaint.scores import AREA_LEVELS, SCORE_NAMES, slice_scores  # noqa: F401 (re-exported)
from ichinpaint.volume import slice_image

# 8-connectivity: diagonal neighbours belong to the same blob.
_CONNECTIVITY_8 = np.ones((3, 3), dtype=bool)


def load_detection(path: str | Path) -> np.ndarray:
    """Read a detect-stage NIfTI (``data[col, row, k]``) as a float32 ``[k, row, col]`` stack."""
    volume = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D anomaly volume, got shape {volume.shape}")
    return np.stack([slice_image(volume, k) for k in range(volume.shape[2])])


def erode_mask(brain_mask: np.ndarray, erosion_px: int) -> np.ndarray:
    """Brain mask shrunk by `erosion_px` pixels (a disc), so rim detections fall outside it.

    Pixels beyond the image border count as outside the brain, so a mask touching
    the border is eroded there too.
    """
    mask = np.asarray(brain_mask) > 0
    if erosion_px <= 0:
        return mask
    radius = int(erosion_px)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = xx**2 + yy**2 <= radius**2
    return ndimage.binary_erosion(mask, structure=disc, border_value=0)


def postprocess_slice(
    anomaly: np.ndarray, brain_mask: np.ndarray, *, erosion_px: int, median_size: int
) -> np.ndarray:
    """The cleaned anomaly map of one slice: median-filtered, zero outside the eroded brain.

    `median_size` <= 1 skips the filter. The filter runs before masking so the
    median of a pixel near the edge also sees the (zero) outside and rim values are
    pulled down rather than amplified.
    """
    anomaly = np.asarray(anomaly, dtype=np.float32)
    if anomaly.shape != np.shape(brain_mask):
        raise ValueError(
            f"anomaly shape {anomaly.shape} differs from brain mask shape {np.shape(brain_mask)}"
        )
    if median_size > 1:
        anomaly = ndimage.median_filter(anomaly, size=int(median_size), mode="constant")
    return np.where(erode_mask(brain_mask, erosion_px), anomaly, np.float32(0.0))


def detect_components(
    anomaly: np.ndarray, threshold: float, *, min_component_px: int
) -> np.ndarray:
    """Labelled detections (int32, 0 = none, 1..n) of pixels strictly above `threshold`.

    Components with fewer than `min_component_px` pixels are dropped and the rest
    relabelled 1..n, so ``labels.max()`` is the number of detections.
    """
    labels, n = ndimage.label(np.asarray(anomaly) > threshold, structure=_CONNECTIVITY_8)
    if n == 0:
        return labels.astype(np.int32)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= max(int(min_component_px), 1)
    keep[0] = False
    new_ids = np.zeros(n + 1, dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels]


def consistency_3d(labels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Keep a slice's component only if it shares a pixel with a detection on k-1 or k+1.

    `labels` is a ``[k, row, col]`` stack of ``detect_components`` outputs; the
    result is relabelled per slice. A series of one slice loses everything (there
    is nothing to confirm against).
    """
    labels = np.asarray(labels)
    detected = labels > 0
    neighbour = np.zeros_like(detected)
    neighbour[1:] |= detected[:-1]
    neighbour[:-1] |= detected[1:]
    out = np.zeros_like(labels, dtype=np.int32)
    for k in range(labels.shape[0]):
        confirmed = np.unique(labels[k][neighbour[k] & detected[k]])
        kept = np.isin(labels[k], confirmed[confirmed > 0])
        out[k] = _relabel(np.where(kept, labels[k], 0))
    return out


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lookup[labels]


def postprocess_series(
    anomaly: np.ndarray,
    brain_masks: np.ndarray,
    *,
    erosion_px: int,
    median_size: int,
    threshold: float,
    min_component_px: int,
    consistency: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole chain on a ``[k, row, col]`` series: (cleaned anomaly, labelled detections).

    `brain_masks` is the matching stack of brain masks (the PNG masks). With
    `consistency` the 3-D check runs after the per-slice component filter.
    """
    anomaly = np.asarray(anomaly)
    brain_masks = np.asarray(brain_masks)
    if anomaly.shape != brain_masks.shape or anomaly.ndim != 3:
        raise ValueError(
            f"anomaly {anomaly.shape} and brain masks {brain_masks.shape} must be equal [k, row, col] stacks"
        )
    cleaned = np.stack(
        [
            postprocess_slice(a, m, erosion_px=erosion_px, median_size=median_size)
            for a, m in zip(anomaly, brain_masks, strict=True)
        ]
    )
    labels = np.stack(
        [detect_components(c, threshold, min_component_px=min_component_px) for c in cleaned]
    )
    if consistency:
        labels = consistency_3d(labels)
    return cleaned, labels
