"""How long the review app's cached computations take on an RSNA-sized output set.

Writes a temporary output set (256-px PNGs and masks, 40-slice float32 anomaly
NIfTIs of low noise, slices.csv) with `--n_val` healthy validation series and one
test series, then times what the page recomputes when a control changes: pooling
healthy validation (erosion, median filter or reduction changed), analysing the
series on screen (any threshold or post-processing change), drawing a slice picture
(slider) and the score strip.

    .venv/bin/python benchmarks/bench_app.py --n_val 10 --n_jobs 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from ichinpaint.app import data, view
from ichinpaint.constants import LABELS
from ichinpaint.evaluation.settings import Settings
from ichinpaint.volume import stack_slices


def write_outputs(root: Path, n_val: int, n_slices: int, size: int) -> str:
    """The output set; returns the test series uid."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    brain = (yy - c) ** 2 + (xx - c) ** 2 <= (0.4 * size) ** 2
    rng = np.random.default_rng(0)
    rows = []
    (root / "data/detections").mkdir(parents=True)
    for i in range(n_val + 1):
        uid, split = f"ID_{i:010x}", ("val" if i < n_val else "test")
        folder = root / "data/processed/png" / uid
        folder.mkdir(parents=True)
        Image.fromarray((brain * 110).astype(np.uint8)).save(folder / "ct.png")
        Image.fromarray((brain * 255).astype(np.uint8)).save(folder / "mask.png")
        for k in range(n_slices):
            rows.append(
                {
                    "image_id": f"ID_{i:03x}{k:06x}",
                    "series_uid": uid,
                    "patient_id": f"P{i}",
                    "split": split,
                    "slice_index": k,
                    "n_slices": n_slices,
                    "image_path": f"data/processed/png/{uid}/ct.png",
                    "mask_path": f"data/processed/png/{uid}/mask.png",
                    "use": True,
                    **dict.fromkeys(LABELS, 0),
                }
            )
        maps = [
            np.where(brain, rng.uniform(0, 0.05, (size, size)), 0).astype(np.float32)
            for _ in range(n_slices)
        ]
        nib.save(
            nib.Nifti1Image(stack_slices(maps), np.eye(4)), root / f"data/detections/{uid}.nii.gz"
        )
    pd.DataFrame(rows).to_csv(root / "data/processed/slices.csv", index=False)
    return f"ID_{n_val:010x}"


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_val", type=int, default=10, help="healthy validation series")
    parser.add_argument("--n_slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="model grid (img_size)")
    parser.add_argument("--n_jobs", type=int, default=1, help="parallel series when pooling")
    args = parser.parse_args()
    size, n = args.size, args.n_slices
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        test_uid = write_outputs(root, args.n_val, n, size)
        paths = data.AppPaths.under(root)
        manifest = data.load_manifest(paths)
        # The page's settings when this benchmark was written: no normalisation.
        settings = Settings(
            normalize="none",
            consistency_3d=False,
            reduction="score_top1pct",
            canvas=size,
            img_size=size,
        )
        choice = data.Choice(settings)
        pooled = {}

        def pool() -> None:
            pooled["v"] = data.pool_validation(manifest, paths, settings, n_jobs=args.n_jobs)

        t_pool = timed(pool)
        decision = data.decide(pooled["v"], choice)
        result = {}

        def analyse() -> None:
            result["r"] = data.analyse_series(
                manifest, paths, test_uid, settings, decision.thresholds
            )

        t_series = timed(analyse)
        r = result["r"]
        t_slice = timed(
            lambda: view.compose_slice(
                r.ct[0],
                r.cleaned[0],
                r.labels[0],
                None,
                opacity=0.7,
                vmax=0.1,
                scale=view.display_scale(size),
            ),
            repeat=n,
        )
        t_strip = timed(
            lambda: view.score_strip(
                r.table, value_column="score_max", threshold=0.05, threshold_label="t",
                current_slice=0,
            ),
            repeat=3,
        )  # fmt: skip
    print(f"\nreview app, {n} slices per series, {size} px, n_jobs {args.n_jobs}\n")
    print("| what | seconds |\n|---|---|")
    print(f"| pool healthy validation ({args.n_val} series) | {t_pool:.2f} |")
    print(f"| analyse the series on screen | {t_series:.2f} |")
    shown = size * view.display_scale(size)
    print(f"| compose one slice picture ({shown} px) | {t_slice:.4f} |")
    print(f"| score strip PNG | {t_strip:.3f} |")


if __name__ == "__main__":
    main()
