"""Pixel ground truth on the model grid: lesion masks (synthetic or user-supplied) and mimics.

Two sources of lesion masks, one contract (a boolean mask per image ID on the model grid):

- the synthetic ground truth, ``<ground_truth>/<series_uid>/lesion.nii.gz`` with
  ``ids.json`` (written by the synthesize stage);
- lesion masks a user has for real data (``data.lesion_masks_dir``, e.g. HemSeg-200 or
  BHSD converted to NIfTI; docs/real-data.md), one NIfTI per series, matched either by
  series UID (``<dir>/<series_uid>.nii.gz`` on the nifti stage's grid, slice k = the
  manifest's ``slice_index``) or by image IDs (``<dir>/<name>.nii.gz`` with
  ``<dir>/<name>.json`` = ``{"image_ids": [...]}`` in the volume's slice order).

Any voxel value > 0 is lesion (subtype codes are allowed and ignored here). Native
masks go to the model grid by area majority, as the png stage resizes images.

Mimic labels (synthetic only, ``mimic.nii.gz``) say which healthy look-alike each voxel
belongs to; evaluate uses them to attribute false-positive components
(`attribute_components`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ichinpaint.constants import MIMIC_KINDS
from ichinpaint.io import read_json
from ichinpaint.volume import slice_image
from ichinpaint.windowing import to_model_grid

# What a false-positive component can lie on: a mimic kind, the band next to the inner
# table, or none of these.
FP_KINDS: tuple[str, ...] = (*MIMIC_KINDS, "rim", "other")
# A component is put on a mimic when that kind covers at least this share of its pixels.
MIMIC_SHARE = 0.2
# A mimic kind marks a model pixel when it covers at least this share of the native
# pixels under it (thin structures such as the falx rarely fill a whole model pixel).
MIMIC_PIXEL_SHARE = 0.25


def _check_ids(path: Path, volume: np.ndarray, image_ids: Sequence[str]) -> None:
    if volume.ndim != 3 or volume.shape[2] != len(image_ids):
        raise ValueError(
            f"{path}: shape {volume.shape} does not match the {len(image_ids)} image IDs listed for it"
        )


def _to_grid(native: np.ndarray, canvas: int, img_size: int) -> np.ndarray:
    return to_model_grid(native.astype(np.float64), canvas, img_size, mode="area") >= 0.5


def volume_truth(
    path: Path, image_ids: Sequence[str], canvas: int, img_size: int
) -> dict[str, np.ndarray]:
    """Lesion mask per image ID from a ``data[col, row, k]`` volume whose slice k is image_ids[k]."""
    lesion = np.asarray(nib.load(str(path)).dataobj)
    _check_ids(path, lesion, image_ids)
    return {
        image_id: _to_grid(slice_image(lesion, k) > 0, canvas, img_size)
        for k, image_id in enumerate(image_ids)
    }


def synthetic_truth(series_dir: Path, canvas: int, img_size: int) -> dict[str, np.ndarray] | None:
    """The synthesize stage's lesion masks of one series, or None when it has none."""
    lesion_path = series_dir / "lesion.nii.gz"
    ids_path = series_dir / "ids.json"
    if not lesion_path.exists():
        return None
    if not ids_path.exists():
        raise FileNotFoundError(f"{ids_path}: ground truth without its slice-to-image map")
    image_ids = list(read_json(ids_path)["image_ids"])
    return volume_truth(lesion_path, image_ids, canvas, img_size)


class LesionMaskDir:
    """User-supplied lesion masks for real data: find a series' masks by UID or image IDs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: lesion_masks_dir is not a directory")

    @functools.cached_property
    def _by_image_id(self) -> dict[str, tuple[Path, tuple[str, ...]]]:
        """image ID -> (volume, its ordered image IDs), from every ``<name>.json`` beside a volume."""
        index: dict[str, tuple[Path, tuple[str, ...]]] = {}
        for sidecar in sorted(self.root.glob("*.json")):
            volume = sidecar.with_suffix(".nii.gz")
            if not volume.exists():
                continue
            try:
                image_ids = tuple(str(i) for i in read_json(sidecar)["image_ids"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{sidecar}: expected {{'image_ids': [...]}} ({error})") from None
            for image_id in image_ids:
                if image_id in index:
                    raise ValueError(
                        f"{sidecar}: image {image_id} is also listed by {index[image_id][0]}"
                    )
                index[image_id] = (volume, image_ids)
        return index

    def series_truth(
        self,
        series_uid: str,
        image_ids_by_slice: dict[int, str],
        canvas: int,
        img_size: int,
    ) -> dict[str, np.ndarray] | None:
        """Masks for one series (image ID -> model-grid mask), or None if the user has none.

        `image_ids_by_slice` is the manifest's slice_index -> image_id of that series.
        """
        by_uid = self.root / f"{series_uid}.nii.gz"
        if by_uid.exists() and not by_uid.with_suffix("").with_suffix(".json").exists():
            n = max(image_ids_by_slice) + 1
            ordered = [image_ids_by_slice.get(k, f"<slice {k}>") for k in range(n)]
            return volume_truth(by_uid, ordered, canvas, img_size)
        hits = {self._by_image_id[i] for i in image_ids_by_slice.values() if i in self._by_image_id}
        if not hits:
            return None
        truth: dict[str, np.ndarray] = {}
        for volume, image_ids in sorted(hits):
            truth.update(volume_truth(volume, image_ids, canvas, img_size))
        # A user mask that covers only part of a series: the other slices are unknown,
        # not healthy, so they are left out (evaluate counts pixels where truth exists).
        return {i: truth[i] for i in image_ids_by_slice.values() if i in truth}

    def __hash__(self) -> int:  # so tasks holding it stay hashable/picklable
        return hash(self.root)


def mimic_labels(series_dir: Path, canvas: int, img_size: int) -> dict[str, np.ndarray] | None:
    """Mimic kind code per model pixel (0 = none) per image ID, or None without mimic labels.

    A model pixel takes the kind covering the largest share of its native pixels, when
    that share is at least `MIMIC_PIXEL_SHARE`.
    """
    path = series_dir / "mimic.nii.gz"
    ids_path = series_dir / "ids.json"
    if not path.exists() or not ids_path.exists():
        return None
    volume = np.asarray(nib.load(str(path)).dataobj)
    image_ids = list(read_json(ids_path)["image_ids"])
    _check_ids(path, volume, image_ids)
    out = {}
    for k, image_id in enumerate(image_ids):
        native = slice_image(volume, k)
        present = [c for c in np.unique(native) if c > 0]
        best = np.zeros((img_size, img_size), np.float64)
        label = np.zeros((img_size, img_size), np.uint8)
        for code in present:
            share = to_model_grid((native == code).astype(np.float64), canvas, img_size)
            better = (share > best) & (share >= MIMIC_PIXEL_SHARE)
            label[better] = code
            best = np.maximum(best, share)
        out[image_id] = label
    return out


def rim_band(brain_mask: np.ndarray, rim_px: int) -> np.ndarray:
    """Brain pixels within `rim_px` pixels of the mask's edge: the inner-table rim."""
    brain = np.asarray(brain_mask, dtype=bool)
    if rim_px <= 0 or not brain.any():
        return np.zeros_like(brain)
    padded = np.pad(brain, 1)  # the image border counts as outside
    depth = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return brain & (depth <= rim_px)


def attribute_components(
    labels: np.ndarray,
    brain_mask: np.ndarray,
    mimic: np.ndarray | None,
    rim_px: int,
) -> list[str]:
    """What each detected component (1..n of `labels`) lies on, one kind from FP_KINDS each.

    A mimic kind when it covers at least `MIMIC_SHARE` of the component (the largest such
    share wins), else "rim" when the component touches the band within `rim_px` of the
    brain mask's edge, else "other". Mimics come first: a venous sinus lies on the rim
    too, and knowing it is the sinus is what tells a user what fooled the detector.
    """
    n = int(labels.max()) if labels.size else 0
    rim = rim_band(brain_mask, rim_px)
    kinds = []
    for component in range(1, n + 1):
        pixels = labels == component
        kind = None
        if mimic is not None:
            codes, counts = np.unique(mimic[pixels], return_counts=True)
            shares = {int(c): n_c / pixels.sum() for c, n_c in zip(codes, counts, strict=True) if c}
            if shares:
                code, share = max(shares.items(), key=lambda item: item[1])
                if share >= MIMIC_SHARE:
                    kind = MIMIC_KINDS[code - 1]
        if kind is None:
            kind = "rim" if (pixels & rim).any() else "other"
        kinds.append(kind)
    return kinds
