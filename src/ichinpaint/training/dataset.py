"""Training and validation samples read from the png stage's slice manifest.

Each sample is the batch-dict mediffusion expects: ``img`` ``(1, H, W)`` the healthy
slice in [-1, 1] and ``concat`` ``(5, H, W)`` the conditioning channels in the order of
``ichinpaint.model.CONDITIONING``. The neighbours come from the manifest's
``above_path``/``below_path``: the png stage points edge slices at themselves, so every
row has both. The inpainting mask is drawn *after* augmentation, on the augmented
brain mask, so it always refers to the geometry the model sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch

from ichinpaint import manifest
from ichinpaint.model import make_conditioning
from ichinpaint.training.augment import augment_slice
from ichinpaint.training.masks import training_mask


def read_split(slices_csv: str | os.PathLike, split: str) -> pd.DataFrame:
    """The usable (``use == True``) rows of one split; training rows must all be healthy."""
    slices_csv = Path(slices_csv)
    rows = manifest.read(slices_csv, manifest.FOR_TRAINING, splits=[split])
    rows = rows[rows["use"]].reset_index(drop=True)
    if split == "train":
        sick = rows[rows["any"].fillna(0).astype(int) != 0]
        if len(sick):
            raise ValueError(
                f"{slices_csv}: {len(sick)} training rows are labelled hemorrhage "
                f"(any != 0, e.g. {sick['image_id'].iloc[0]}); the train split must be healthy"
            )
    return rows


def to_unit_range(png: np.ndarray) -> torch.Tensor:
    """Brain-window PNG values 0..255 -> [-1, 1], as the model contract says."""
    return torch.from_numpy(png.astype(np.float32) / 127.5 - 1.0)


class InpaintingDataset(torch.utils.data.Dataset):
    """Slices of one split with augmentation (optional) and freshly drawn inpainting masks.

    With ``fixed_seed`` every index always gives the same mask (and augmentation),
    which makes validation losses comparable from one validation to the next.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        root: str | os.PathLike,
        img_size: int,
        sizes: Sequence[int],
        grid_fraction: float,
        transforms: A.Compose | None = None,
        fixed_seed: int | None = None,
    ) -> None:
        if len(rows) == 0:
            raise ValueError("no slices to train or validate on (empty split after use == True)")
        self.rows = rows.reset_index(drop=True)
        self.root = Path(root)
        self.img_size = img_size
        self.sizes = list(sizes)
        self.grid_fraction = grid_fraction
        self.transforms = transforms
        self.fixed_seed = fixed_seed

    def __len__(self) -> int:
        return len(self.rows)

    def _seed(self, index: int) -> int:
        if self.fixed_seed is not None:
            return (self.fixed_seed * 1_000_003 + index) % 2**31
        # torch's RNG is seeded per worker and per epoch by the DataLoader.
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def load_arrays(self, index: int) -> dict[str, np.ndarray]:
        """The raw uint8 slice, neighbours and brain mask (0/255) of row `index`."""
        row = self.rows.iloc[index]
        return {
            key: manifest.read_png(self.root / row[column], self.img_size)
            for key, column in (
                ("image", "image_path"),
                ("above", "above_path"),
                ("below", "below_path"),
                ("brain", "mask_path"),
            )
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = self._seed(index)
        arrays = self.load_arrays(index)
        image, above, below, brain = (
            arrays["image"],
            arrays["above"],
            arrays["below"],
            arrays["brain"],
        )
        if self.transforms is not None:
            image, above, below, brain = augment_slice(
                self.transforms, image, above, below, brain, seed
            )
        brain01 = (brain > 127).astype(np.float32)
        hidden = training_mask(brain01, self.sizes, self.grid_fraction, np.random.default_rng(seed))
        img = to_unit_range(image)[None, None]
        concat = make_conditioning(
            img,
            torch.from_numpy(brain01)[None, None],
            to_unit_range(above)[None, None],
            to_unit_range(below)[None, None],
            torch.from_numpy(hidden)[None, None],
        )
        return {"img": img[0], "concat": concat[0]}
