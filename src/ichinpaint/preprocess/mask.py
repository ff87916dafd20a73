"""Brain masks for a directory of HU volumes: one series at a time, Dice, an overlay sheet.

The extraction methods themselves live in `ichinpaint.preprocess.brainmask`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichinpaint import params as p
from ichinpaint.constants import SUBTYPE_CODES, SUBTYPES
from ichinpaint.io import atomic_path
from ichinpaint.niftidir import NIFTI_SUFFIX, load_volume, series_uid_of
from ichinpaint.preprocess import brainmask


@dataclass(frozen=True)
class MaskSettings:
    """The ``mask`` params."""

    method: str = p.setting(
        "threshold",
        "threshold: HU range + morphology; model: TorchScript extractor at --model_path",
        choices=sorted(brainmask.METHODS),
    )
    model_path: str = p.setting("", "TorchScript brain-extraction model (method=model)")
    model_size: int = p.setting(
        512, "square input size of the model (method=model)", rule=p.at_least(8)
    )
    model_output: str = p.setting(
        "logits",
        "what the model returns (method=model); brain where probability >= 0.5",
        choices=("logits", "probabilities"),
    )
    n_jobs: int = p.setting(-1, "parallel series (-1 = all cores)", rule=p.N_JOBS)

    def method_options(self) -> dict[str, Any]:
        """The keyword options of the chosen method."""
        if self.method != "model":
            return {}
        if not self.model_path:
            raise ValueError("--method model needs --model_path (a TorchScript file)")
        return {
            "model_path": self.model_path,
            "model_size": self.model_size,
            "model_output": self.model_output,
        }


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
    row = {"series_uid": uid, "slices": int(hu.shape[2]), "voxels": int(mask.sum()), "dice": score}
    lesion_path = truth_dir / uid / "lesion.nii.gz"
    if lesion_path.is_file():
        row.update(lesion_coverage(mask, np.asarray(load_volume(lesion_path).dataobj)))
    return row


def lesion_coverage(mask: np.ndarray, lesion: np.ndarray) -> dict[str, int]:
    """Lesion voxels per subtype, and how many of them the brain mask holds.

    Detection only looks inside the mask, so blood outside it is lost before detection
    begins: extra-axial blood next to the inner table is what a tight mask cuts away.
    """
    inside = np.asarray(mask) > 0
    counts = {}
    for name, code in SUBTYPE_CODES.items():
        voxels = np.asarray(lesion) == code
        counts[f"lesion_voxels_{name}"] = int(voxels.sum())
        counts[f"lesion_inside_{name}"] = int((voxels & inside).sum())
    return counts


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
    totals = {
        name: (
            sum(row.get(f"lesion_voxels_{name}", 0) for row in rows),
            sum(row.get(f"lesion_inside_{name}", 0) for row in rows),
        )
        for name in SUBTYPES
    }
    if any(total for total, _ in totals.values()):
        all_voxels = sum(total for total, _ in totals.values())
        metrics["lesion_inside_mask"] = round(sum(i for _, i in totals.values()) / all_voxels, 5)
        for name, (total, inside) in totals.items():
            if total:
                metrics[f"lesion_inside_mask_{name}"] = round(inside / total, 5)
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
