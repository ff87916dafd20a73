"""A tiny PNG data set following the png stage's contract, for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ichinpaint.constants import LABELS


def head_slice(img_size: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A brain-window-like slice (skull ring, grey brain with texture) and its brain mask."""
    yy, xx = np.mgrid[:img_size, :img_size]
    c = (img_size - 1) / 2
    r = np.hypot((yy - c) / (0.42 * img_size), (xx - c) / (0.36 * img_size))
    brain = r < 0.85
    image = np.zeros((img_size, img_size), np.float32)
    image[r < 1.0] = 255  # skull
    image[brain] = 110 + 20 * np.sin(xx[brain] / 2.0 + k) + rng.normal(0, 4, brain.sum())
    return np.clip(image, 0, 255).astype(np.uint8), (brain * 255).astype(np.uint8)


def write_png_set(
    root: Path, img_size: int = 16, series: dict[str, int] | None = None, seed: int = 0
) -> Path:
    """Write PNGs + data/processed/slices.csv under `root`; return the manifest path."""
    series = series or {"train": 2, "val": 1, "test": 1}
    rng = np.random.default_rng(seed)
    rows = []
    n_slices = 4
    for split, count in series.items():
        for s in range(count):
            uid = f"ID_{split}{s:06d}"
            folder = root / "data/processed/png" / uid
            folder.mkdir(parents=True, exist_ok=True)
            ids = [f"ID_{split[:2]}{s:02d}{k:05d}" for k in range(n_slices)]
            for k, image_id in enumerate(ids):
                image, brain = head_slice(img_size, k, rng)
                Image.fromarray(image).save(folder / f"{image_id}.png")
                Image.fromarray(brain).save(folder / f"{image_id}_mask.png")
            for k, image_id in enumerate(ids):
                above, below = ids[min(k + 1, n_slices - 1)], ids[max(k - 1, 0)]
                rel = f"data/processed/png/{uid}"
                rows.append(
                    {
                        "image_id": image_id,
                        "series_uid": uid,
                        "patient_id": f"P_{split}{s}",
                        "split": split,
                        "slice_index": k,
                        "n_slices": n_slices,
                        "above_id": above,
                        "below_id": below,
                        "image_path": f"{rel}/{image_id}.png",
                        "mask_path": f"{rel}/{image_id}_mask.png",
                        "above_path": f"{rel}/{above}.png",
                        "below_path": f"{rel}/{below}.png",
                        "midrange_fraction": 0.3,
                        "use": k != 0 or split != "train",  # one unusable slice
                        "drop_reason": "" if (k != 0 or split != "train") else "midrange_below_min",
                        **{label: 0 for label in LABELS},
                    }
                )
    manifest = root / "data/processed/slices.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
