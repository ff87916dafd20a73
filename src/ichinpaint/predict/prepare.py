"""One series of an input folder through the stages' own library code.

The same steps, in the same code, as the pipeline's nifti -> mask -> png stages:
`dicom.load_series` (checks, sorting along the normal, HU with the RSNA 12-bit fix,
RAS affine), the nifti stage's NIfTI writer and sidecar (`preprocess.nifti`), `preprocess.mask.mask_one_series`
(`brainmask.extract_brain`), and `preprocess.png.export_series` (brain window, pad/crop to
the canvas, area resize, mid-range filter). Only the inputs differ: files found by
`inputs.scan_inputs` instead of a labelled slices.csv. A series that cannot be
stacked is refused with the nifti stage's reason; nothing is guessed. A series whose
masking or export fails is refused as `prepare_failed` with the error, so one odd
series does not stop a run over thousands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ichinpaint import dicom, io
from ichinpaint.niftidir import NIFTI_SUFFIX
from ichinpaint.preprocess import png as png_export
from ichinpaint.preprocess.mask import mask_one_series

PREDICT_SPLIT = "predict"  # the `split` of every predicted series in the manifests
IN_CALIBRATION_SET = "in_calibration_set"  # series the decision's calibrator was fitted on
PREPARE_FAILED = "prepare_failed"  # stacked, but masking or PNG export raised (detail says what)


@dataclass(frozen=True)
class SeriesTask:
    """One series' files and the preprocessing settings (picklable for `parallel_map`)."""

    series_uid: str
    study_uid: str
    paths: tuple[str, ...]
    image_ids: tuple[str, ...]  # per path (SOPInstanceUID), in the same order
    positions: tuple[float, ...]  # per path, from the header (the sort key)
    work_dir: str
    canvas: int
    img_size: int
    min_fraction: float
    spacing_tolerance: float = 0.1
    mask_method: str = "threshold"
    mask_options: dict[str, Any] = field(default_factory=dict)


def nifti_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / "nifti"


def mask_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / "brainmask"


def prepare_series(task: SeriesTask) -> dict[str, Any]:
    """Volume, mask and PNGs of one series; ``status`` written or refused (never raises for data)."""
    result: dict[str, Any] = {
        "series_uid": task.series_uid,
        "n_images": len(task.paths),
        "status": "refused",
        "reason": "",
        "detail": "",
        "rows": [],
    }
    try:
        vol = dicom.load_series(list(task.paths), spacing_tolerance=task.spacing_tolerance)
    except dicom.SeriesRefused as exc:
        return {**result, "reason": exc.reason, "detail": exc.detail}
    try:
        return {**result, **mask_and_export(task, vol)}
    except Exception as exc:  # noqa: BLE001 - one odd series must not stop thousands
        detail = f"{type(exc).__name__}: {exc}"
        return {**result, "reason": PREPARE_FAILED, "detail": detail}


def mask_and_export(task: SeriesTask, vol: dicom.SeriesVolume) -> dict[str, Any]:
    """Write the stacked volume, its brain mask and its PNGs; the manifest rows."""
    vol.image_ids = image_ids_in_volume_order(task, vol)
    volume_path = write_volume(task, vol)
    mask_one_series(
        volume_path,
        out_dir=mask_dir(task.work_dir),
        truth_dir=Path(task.work_dir) / "no_ground_truth",
        method=task.mask_method,
        options=task.mask_options,
    )
    rows = png_export.export_series(
        volume_path,
        masks_dir=mask_dir(task.work_dir),
        tmp_dir=Path(task.work_dir),
        out_dir=Path(task.work_dir),
        canvas=task.canvas,
        img_size=task.img_size,
        min_fraction=task.min_fraction,
    )
    return {"status": "written", "rows": rows}


def image_ids_in_volume_order(task: SeriesTask, vol: dicom.SeriesVolume) -> list[str]:
    """The SOPInstanceUIDs of the volume's slices (load_series names them by file name).

    Matched by file name when names are unique in the series, else by the same stable
    sort on the header positions that load_series uses.
    """
    names = [dicom.image_id_from_path(p) for p in task.paths]
    if len(set(names)) == len(names):
        by_name = dict(zip(names, task.image_ids, strict=True))
        return [by_name[name] for name in vol.image_ids]
    order = np.argsort(np.asarray(task.positions, dtype=float), kind="stable")
    if len(order) != len(vol.image_ids):
        raise ValueError(
            f"series {task.series_uid}: {len(vol.image_ids)} slices stacked from "
            f"{len(order)} files with repeated names; cannot tell which file is which"
        )
    return [task.image_ids[i] for i in order]


def write_volume(task: SeriesTask, vol: dicom.SeriesVolume) -> Path:
    """The nifti stage's volume and sidecar (no patient ID: predict outputs carry none)."""
    from ichinpaint.preprocess.nifti import nifti_image, sidecar

    out = nifti_dir(task.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    mask_dir(task.work_dir).mkdir(parents=True, exist_ok=True)
    path = out / f"{task.series_uid}{NIFTI_SUFFIX}"
    nib.save(nifti_image(vol), path)
    info = {
        "series_uid": task.series_uid,
        "patient_id": "",
        "study_uid": task.study_uid,
        "split": PREDICT_SPLIT,
    }
    io.write_json(out / f"{task.series_uid}.json", sidecar(info, vol))
    return path
