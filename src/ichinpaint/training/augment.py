"""The training augmentation, kept as an albumentations pipeline saved to JSON.

The pipeline lives in ``transforms/train.json`` (written by :func:`write_transforms`,
run ``python -m ichinpaint.training.augment transforms/train.json``) so that a change of
augmentation is a versioned file change that DVC sees, not a code edit. The study used
horizontal flips and rotations of up to 15 degrees; a small scale jitter is added.

One geometric draw applies to the slice, both neighbours (``above``/``below``, as extra
image targets) and the brain mask (``mask``, nearest interpolation), so the
conditioning stays aligned with the image. Outside the head the fill is 0 (air is
black in the brain window).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import albumentations as A
import numpy as np

from ichinpaint.io import atomic_path

NEIGHBOUR_TARGETS: dict[str, str] = {"above": "image", "below": "image"}


def build_transforms(
    flip_p: float = 0.5, rotate_deg: float = 15.0, scale: float = 0.05, affine_p: float = 0.8
) -> A.Compose:
    """Horizontal flip plus a rotation/scale affine, for the slice, neighbours and brain mask."""
    return A.Compose(
        [
            A.HorizontalFlip(p=flip_p),
            A.Affine(
                rotate=(-rotate_deg, rotate_deg),
                scale=(1 - scale, 1 + scale),
                interpolation=1,  # bilinear for images
                mask_interpolation=0,  # nearest for the brain mask
                border_mode=0,
                fill=0,
                fill_mask=0,
                p=affine_p,
            ),
        ],
        additional_targets=dict(NEIGHBOUR_TARGETS),
    )


def write_transforms(path: str | os.PathLike, transforms: A.Compose | None = None) -> Path:
    """Save `transforms` (default: :func:`build_transforms`) as albumentations JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        A.save(transforms or build_transforms(), str(tmp), data_format="json")
    return path


def load_transforms(path: str | os.PathLike) -> A.Compose:
    """Load a saved pipeline and make sure it knows the neighbour targets."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: augmentation pipeline not found (write it with "
            "`python -m ichinpaint.training.augment {path}`)"
        )
    try:
        transforms = A.load(str(path), data_format="json")
    except Exception as exc:  # albumentations raises several types for bad files
        raise ValueError(f"{path}: not an albumentations pipeline ({exc})") from exc
    missing = {k: v for k, v in NEIGHBOUR_TARGETS.items() if k not in transforms.additional_targets}
    if missing:
        transforms.add_targets(missing)
    return transforms


def augment_slice(
    transforms: A.Compose,
    image: np.ndarray,
    above: np.ndarray,
    below: np.ndarray,
    brain_mask: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply one random draw (fixed by `seed`) to the slice, its neighbours and its brain mask."""
    transforms.set_random_seed(seed)
    out = transforms(image=image, above=above, below=below, mask=brain_mask)
    return out["image"], out["above"], out["below"], out["mask"]


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "transforms/train.json"
    print(f"wrote {write_transforms(target)}")
