"""Extract the brain from every HU volume: one uint8 0/1 mask per series on the same grid.

Reads data/interim/nifti/<series_uid>.nii.gz, writes <out>/<series_uid>.nii.gz with the
source affine, and measures Dice against <ground_truth>/<series_uid>/brain.nii.gz
where that file exists (the synthetic data; real data has none).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichinpaint import brainmask
from ichinpaint.io import atomic_dir, atomic_path, parallel_map, write_json

NIFTI_SUFFIX = ".nii.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nifti", default="data/interim/nifti", help="directory of HU volumes (nifti stage)"
    )
    parser.add_argument(
        "--ground_truth",
        default="data/raw/synthetic/ground_truth",
        help="directory with <series_uid>/brain.nii.gz; Dice is skipped for series without one",
    )
    parser.add_argument("--out", default="data/interim/brainmask", help="output directory of masks")
    parser.add_argument("--metrics", default="metrics/mask.json", help="Dice and counts (JSON)")
    parser.add_argument(
        "--method",
        default="threshold",
        choices=sorted(brainmask.METHODS),
        help="threshold: HU range + morphology; model: TorchScript extractor at --model_path",
    )
    parser.add_argument(
        "--model_path", default="", help="TorchScript brain-extraction model (method=model)"
    )
    parser.add_argument(
        "--model_size", type=int, default=512, help="square input size of the model (method=model)"
    )
    parser.add_argument(
        "--model_output",
        default="logits",
        choices=["logits", "probabilities"],
        help="what the model returns (method=model); brain where probability >= 0.5",
    )
    parser.add_argument("--n_jobs", type=int, default=-1, help="parallel series (-1 = all cores)")
    parser.add_argument(
        "--overlay",
        default="metrics/mask_overlay.png",
        help="PNG of mask outlines (red; ground truth green) on a few series; empty to skip",
    )


def series_uid_of(path: Path) -> str:
    return path.name[: -len(NIFTI_SUFFIX)]


def list_volumes(nifti_dir: str | Path) -> list[Path]:
    """The HU volumes of a nifti-stage directory, sorted by series UID."""
    nifti_dir = Path(nifti_dir)
    if not nifti_dir.is_dir():
        raise FileNotFoundError(f"nifti directory not found: {nifti_dir}")
    return sorted(nifti_dir.glob(f"*{NIFTI_SUFFIX}"))


def load_volume(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI, turning any reader failure into an error that names the file."""
    try:
        image = nib.load(path)
        if len(image.shape) != 3:
            raise ValueError(f"expected a 3-D volume, got shape {image.shape}")
        return image
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot use this NIfTI volume ({error})") from error


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of the chosen method, from the command line."""
    if args.method == "model":
        if not args.model_path:
            raise ValueError("--method model needs --model_path (a TorchScript file)")
        return {
            "model_path": args.model_path,
            "model_size": args.model_size,
            "model_output": args.model_output,
        }
    return {}


def ground_truth_dice(mask: np.ndarray, affine: np.ndarray, truth_path: Path) -> float:
    """Dice against a ground-truth brain mask that must lie on the same voxel grid."""
    truth = load_volume(truth_path)
    if truth.shape != mask.shape:
        raise ValueError(
            f"{truth_path}: shape {truth.shape} differs from the volume's {mask.shape}"
        )
    if not np.allclose(truth.affine, affine, atol=1e-2):
        raise ValueError(f"{truth_path}: affine differs from the HU volume's (not the same grid)")
    return brainmask.dice(mask, np.asarray(truth.dataobj) > 0)


def mask_one_series(
    path: Path, *, out_dir: Path, truth_dir: Path, method: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Mask one volume, write it to `out_dir`, and return its row of the metrics."""
    uid = series_uid_of(path)
    image = load_volume(path)
    hu = np.asarray(image.dataobj)
    mask = brainmask.extract_brain(hu, image.affine, method=method, **options)
    out = nib.Nifti1Image(mask, image.affine)
    out.set_qform(image.affine, code=1)
    out.set_sform(image.affine, code=1)
    nib.save(out, out_dir / f"{uid}{NIFTI_SUFFIX}")
    truth_path = truth_dir / uid / "brain.nii.gz"
    score = ground_truth_dice(mask, image.affine, truth_path) if truth_path.is_file() else None
    return {"series_uid": uid, "slices": int(hu.shape[2]), "voxels": int(mask.sum()), "dice": score}


def summarise(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Flat metrics for `dvc metrics diff`, plus Dice per series."""
    scores = {row["series_uid"]: round(row["dice"], 5) for row in rows if row["dice"] is not None}
    metrics: dict[str, Any] = {
        "method": method,
        "series": len(rows),
        "slices": sum(row["slices"] for row in rows),
        "series_with_ground_truth": len(scores),
        "empty_masks": sum(row["voxels"] == 0 for row in rows),
    }
    if scores:
        values = np.array(list(scores.values()))
        metrics.update(
            dice_mean=round(float(values.mean()), 5), dice_min=round(float(values.min()), 5)
        )
        metrics["dice"] = scores
    return metrics


def write_overlay(
    volumes: list[Path], mask_dir: Path, truth_dir: Path, path: str | Path, n_series: int = 4
) -> None:
    """A contact sheet a person can judge at a glance: brain window, mask outline in red,
    ground truth in green where it exists; three slices (25/50/75 %) of a few series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ichinpaint.volume import slice_image
    from ichinpaint.windowing import brain_window

    chosen = volumes[:: max(1, len(volumes) // n_series)][:n_series]
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9, 3 * len(chosen)), squeeze=False)
    for row, volume_path in zip(axes, chosen, strict=True):
        uid = series_uid_of(volume_path)
        hu = np.asarray(load_volume(volume_path).dataobj)
        mask = np.asarray(load_volume(mask_dir / volume_path.name).dataobj)
        truth_path = truth_dir / uid / "brain.nii.gz"
        truth = np.asarray(load_volume(truth_path).dataobj) if truth_path.is_file() else None
        for ax, fraction in zip(row, (0.25, 0.5, 0.75), strict=True):
            k = min(int(fraction * hu.shape[2]), hu.shape[2] - 1)
            ax.imshow(brain_window(slice_image(hu, k)), cmap="gray", vmin=0, vmax=255)
            if truth is not None and slice_image(truth, k).any():
                ax.contour(slice_image(truth, k), levels=[0.5], colors="lime", linewidths=0.8)
            if slice_image(mask, k).any():
                ax.contour(slice_image(mask, k), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{uid} k={k}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> str:
    volumes = list_volumes(args.nifti)
    if not volumes:
        raise FileNotFoundError(f"no *{NIFTI_SUFFIX} volumes in {args.nifti}")
    work = functools.partial(
        mask_one_series,
        truth_dir=Path(args.ground_truth),
        method=args.method,
        options=method_options(args),
    )
    with atomic_dir(args.out) as tmp:
        rows = parallel_map(
            functools.partial(work, out_dir=tmp),
            volumes,
            n_jobs=args.n_jobs,
            desc="brain masks",
            unit="series",
        )
    metrics = summarise(rows, args.method)
    write_json(args.metrics, metrics)
    if args.overlay:
        write_overlay(volumes, Path(args.out), Path(args.ground_truth), args.overlay)
    dice_text = (
        f", Dice mean {metrics['dice_mean']:.4f} min {metrics['dice_min']:.4f} on {metrics['series_with_ground_truth']}"
        if "dice_mean" in metrics
        else ", no ground truth"
    )
    return f"{len(rows)} series masked with {args.method}{dice_text}; empty masks: {metrics['empty_masks']}"
