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
        neighbours: str = "keep",
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
        self.neighbours = neighbours

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
        return self.sample(index, self._seed(index))

    def sample(self, index: int, seed: int) -> dict[str, torch.Tensor]:
        """Row `index` augmented and masked by the randomness of `seed` (same seed, same sample)."""
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
            self.neighbours,
        )
        return {"img": img[0], "concat": concat[0]}


def stream_seed(*keys: int) -> int:
    """A 31-bit seed that depends only on `keys` (no global RNG state)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)


class TrainingStream(torch.utils.data.Dataset):
    """Training samples indexed by their *position* in the run, not by row.

    Position ``p`` is sample ``p % n`` of epoch ``p // n`` in a seeded per-epoch
    permutation, augmented and masked with a seed of ``(seed, p)``. Every sample of a run
    is thus fixed by its position alone, so a resumed run that starts at the position
    the killed run had reached sees exactly the samples, in the order, that an
    uninterrupted run would (see `PositionSampler`). Items carry their ``position``.
    """

    def __init__(self, base: InpaintingDataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.base)

    def row_of(self, position: int) -> int:
        epoch, within = divmod(position, len(self.base))
        if epoch not in self._orders:
            self._orders = {
                epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.base))
            }
        return int(self._orders[epoch][within])

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        item = self.base.sample(self.row_of(position), stream_seed(self.seed, position))
        item["position"] = torch.tensor(position, dtype=torch.int64)
        return item


class PositionSampler(torch.utils.data.Sampler[int]):
    """The positions one rank trains on, from where the run stands to its end.

    `start()` is asked when iteration begins (after Lightning restored a checkpoint):
    it is the number of samples all ranks have consumed, ``global_step x accumulate x
    batch x world``. Rank ``r`` takes positions ``start + r, start + r + world, ...``
    up to `total`, so ranks never share a sample and the order does not depend on
    how often the run was interrupted.
    """

    def __init__(self, total: int, start, rank: int = 0, world: int = 1) -> None:
        self.total = total
        self.start = start
        self.rank = rank
        self.world = world

    def __iter__(self):
        return iter(range(self.start() + self.rank, self.total, self.world))

    def __len__(self) -> int:
        # The whole run, whatever has been done: Lightning restores how many batches of
        # this (single) epoch were completed and stops the epoch at this length.
        return len(range(self.rank, self.total, self.world))
