"""The nifti stage's work: each series of kept images as one int16 HU NIfTI volume.

A series' DICOM files are sorted along the slice normal and decoded to HU by
`ichinpaint.dicom.load_series` (RSNA 12-bit fix included); `convert_series` writes
``<series_uid>.nii.gz`` (``data[col, row, k]``, affine from IPP/IOP/PixelSpacing with
any gantry tilt kept, not resampled) and a ``<series_uid>.json`` sidecar with the image
IDs in slice order, or says why the series was refused (never raises for data).
`predict` writes its volumes with the same `nifti_image` and `sidecar`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ichinpaint import dicom, io, names
from ichinpaint import params as p

SERIES_COLUMNS = [
    "series_uid",
    "patient_id",
    "study_uid",
    "split",
    "n_images",
    "status",
    "reason",
    "detail",
    "gantry_tilt_deg",
    "n_12bit_fixed",
    "n_hu_flagged",
    "n_dropped",
]


@dataclass(frozen=True)
class NiftiSettings:
    """The ``nifti`` params."""

    spacing_tolerance: float = p.setting(
        0.1,
        "refuse a series when an IPP step differs from the mean step by more than this "
        "share of it (a missing slice)",
        rule=p.greater_than(0),
    )
    n_jobs: int = p.setting(-1, "processes converting series (-1: all cores)", rule=p.N_JOBS)


def series_tasks(
    slices: pd.DataFrame, image_dir: Path, out_dir: Path, spacing_tolerance: float
) -> list[dict]:
    """One task per series of kept images: its identifiers and file paths."""
    kept = slices.loc[slices["status"] == "kept"]
    tasks = []
    for series_uid, rows in kept.groupby("series_uid", sort=True):
        first = rows.iloc[0]
        tasks.append(
            {
                "series_uid": str(series_uid),
                "patient_id": str(first["patient_id"]),
                "study_uid": str(first["study_uid"]),
                "split": str(first["split"]),
                "image_ids": [str(i) for i in rows["image_id"]],
                "paths": [str(image_dir / f"{i}.dcm") for i in rows["image_id"]],
                "out_dir": str(out_dir),
                "spacing_tolerance": spacing_tolerance,
            }
        )
    return tasks


def nifti_image(vol: dicom.SeriesVolume) -> nib.Nifti1Image:
    """int16 HU image; the sform holds the exact (possibly sheared, tilted) affine."""
    image = nib.Nifti1Image(vol.data, vol.affine)
    image.header.set_xyzt_units("mm")
    image.header.set_sform(vol.affine, code="scanner")
    image.header.set_qform(vol.affine, code="scanner")  # nearest rigid approximation when tilted
    image.header["scl_slope"] = 1
    image.header["scl_inter"] = 0
    return image


def sidecar(task: dict, vol: dicom.SeriesVolume) -> dict:
    return {
        "series_uid": task["series_uid"],
        "patient_id": task["patient_id"],
        "study_uid": task["study_uid"],
        "split": task["split"],
        "image_ids": vol.image_ids,
        "positions": vol.positions,
        "gantry_tilt_deg": vol.gantry_tilt_deg,
        "pixel_spacing": list(vol.pixel_spacing),
        "slice_spacing": vol.slice_spacing,
        "shape": list(vol.data.shape),
        "n_12bit_fixed": vol.n_12bit_fixed,
        "hu_flagged": vol.hu_flagged,
        "dropped": vol.dropped,
    }


def identifier_problem(task: dict) -> str:
    """Why the series UID or an image ID of a task cannot name a file ("" when both can).

    slices.csv comes from the filter stage, which already refuses such IDs; the check is
    repeated because the table is a plain CSV that anyone can edit.
    """
    problem = names.uid_problem(task["series_uid"], "series UID")
    for image_id in task["image_ids"]:
        problem = problem or names.name_problem(image_id)
    return problem


def convert_series(task: dict) -> dict:
    """Write one series' volume and sidecar, or say why it was refused (never raises for data)."""
    result = {name: task[name] for name in ("series_uid", "patient_id", "study_uid", "split")}
    result.update(
        n_images=len(task["paths"]),
        gantry_tilt_deg=np.nan,
        n_12bit_fixed=0,
        n_hu_flagged=0,
        n_dropped=0,
    )
    problem = identifier_problem(task)
    if problem:
        shown = names.printable(task["series_uid"])
        return {**result, "series_uid": shown, "status": "refused",
                "reason": names.UNSAFE_IDENTIFIER, "detail": problem}  # fmt: skip
    try:
        vol = dicom.load_series(task["paths"], spacing_tolerance=task["spacing_tolerance"])
    except dicom.SeriesRefused as exc:
        return {**result, "status": "refused", "reason": exc.reason, "detail": exc.detail}
    out_dir = Path(task["out_dir"])
    nib.save(nifti_image(vol), names.child(out_dir, task["series_uid"], ".nii.gz", "series UID"))
    io.write_json(names.child(out_dir, task["series_uid"], ".json"), sidecar(task, vol))
    return {
        **result,
        "status": "written",
        "reason": "",
        "detail": "; ".join(
            [f"dropped {i}: {p}" for i, p in vol.dropped.items()]
            + [f"{i}: {p}" for i, p in vol.hu_flagged.items()]
        ),
        "gantry_tilt_deg": round(vol.gantry_tilt_deg, 4),
        "n_12bit_fixed": vol.n_12bit_fixed,
        "n_hu_flagged": len(vol.hu_flagged),
        "n_dropped": len(vol.dropped),
    }


def summarise(results: pd.DataFrame, kept_images: int) -> dict:
    """Counts that reconcile: kept = written + dropped (edge slices) + in refused series."""
    written = results["status"] == "written"
    dropped = int(results.loc[written, "n_dropped"].sum())
    metrics = {
        "series_total": len(results),
        "series_written": int(written.sum()),
        "series_refused": int((~written).sum()),
        "images_kept": kept_images,
        "images_written": int(results.loc[written, "n_images"].sum()) - dropped,
        "images_dropped": dropped,
        "images_refused": int(results.loc[~written, "n_images"].sum()),
        "series_tilted": int((results.loc[written, "gantry_tilt_deg"] > 0.1).sum()),
        "slices_12bit_fixed": int(results["n_12bit_fixed"].sum()),
        "slices_hu_flagged": int(results["n_hu_flagged"].sum()),
    }
    assert metrics["images_kept"] == (
        metrics["images_written"] + metrics["images_dropped"] + metrics["images_refused"]
    )
    reasons = Counter(results.loc[~written, "reason"])
    for reason in dicom.REFUSAL_REASONS:
        metrics[f"refused_{reason}"] = reasons.get(reason, 0)
    # Which series, by reason (one entry per reason that occurred).
    metrics["refused"] = {
        reason: sorted(results.loc[~written & (results["reason"] == reason), "series_uid"])
        for reason in sorted(reasons)
    }
    return metrics
