"""Slices per second of the mask (threshold method) and png stages on this machine, one core.

Volumes are ellipsoid head phantoms (air, scalp, 1000 HU skull, CSF rim, brain,
noise) at the synthetic data's geometry and at the RSNA geometry (512 x 512, 0.45 mm
pixels, 5 mm slices); the png figure includes reading the NIfTI files and writing
the PNGs, as the stage does per series.

    .venv/bin/python benchmarks/bench_mask_png.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from ichinpaint import volume
from ichinpaint.preprocess import brainmask
from ichinpaint.preprocess.png import export_series

CASES = (
    # name, matrix, slices, pixel mm, canvas, img_size
    ("synthetic 256", 256, 16, 1.0, 256, 64),
    ("RSNA 512", 512, 32, 0.45, 512, 256),
)
REPEATS = 2


def phantom(
    matrix: int, n_slices: int, pixel_mm: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """HU volume ``data[col, row, k]`` and RAS affine of an ellipsoid head."""
    rng = np.random.default_rng(seed)
    centre = (np.arange(matrix) - matrix / 2) * pixel_mm
    x, y, z = np.meshgrid(
        centre, centre * 1.15, (np.arange(n_slices) - n_slices / 2) * 5.0, indexing="ij"
    )
    rho = np.sqrt((x / 75) ** 2 + (y / 90) ** 2 + (z / 80) ** 2)
    hu = np.select(
        [rho < 0.96, rho < 1.0, rho < 1.07, rho < 1.12], [32.0, 8.0, 1000.0, 40.0], -1000.0
    )
    hu += rng.normal(0.0, 5.0, hu.shape)
    first = [-matrix / 2 * pixel_mm, -matrix / 2 * pixel_mm, 0.0]
    affine = volume.affine_ras(first, [1, 0, 0, 0, 1, 0], [pixel_mm, pixel_mm], [0, 0, 5.0])
    return np.rint(hu).astype(np.int16), affine


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_case(
    name: str, matrix: int, n_slices: int, pixel_mm: float, canvas: int, img_size: int
) -> tuple:
    hu, affine = phantom(matrix, n_slices, pixel_mm)
    mask_s = best_of(lambda: brainmask.extract_brain(hu, affine, method="threshold"))
    mask = brainmask.extract_brain(hu, affine)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "nifti").mkdir()
        (root / "masks").mkdir()
        uid = "ID_bench00001"
        nib.save(nib.Nifti1Image(hu, affine), root / "nifti" / f"{uid}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"{uid}.nii.gz")
        ids = [f"ID_{k:09x}" for k in range(n_slices)]
        sidecar = {"series_uid": uid, "patient_id": "ID_p", "split": "train", "image_ids": ids}
        (root / "nifti" / f"{uid}.json").write_text(json.dumps(sidecar))

        def export() -> None:
            export_series(
                root / "nifti" / f"{uid}.nii.gz",
                masks_dir=root / "masks",
                tmp_dir=root / "out",
                out_dir=Path("data/processed"),
                canvas=canvas,
                img_size=img_size,
                min_fraction=0.05,
            )

        png_s = best_of(export)
    return name, f"{matrix}x{matrix}x{n_slices}", img_size, n_slices / mask_s, n_slices / png_s


def main() -> None:
    print(f"{'case':<14} {'volume':<12} {'img_size':>8} {'mask slices/s':>14} {'png slices/s':>13}")
    for case in CASES:
        name, shape, size, mask_rate, png_rate = bench_case(*case)
        print(f"{name:<14} {shape:<12} {size:>8} {mask_rate:>14.1f} {png_rate:>13.1f}")


if __name__ == "__main__":
    main()
