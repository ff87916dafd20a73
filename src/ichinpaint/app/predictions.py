"""A predict output folder for the review app: series, native CT, maps and detections.

`ichinpaint predict` writes per series the post-processed map and the detections on
the series' own voxel grid (``series/<uid>/{anomaly,detections}.nii.gz``), the
per-slice table and a summary; `files.csv` keeps where each DICOM file is, so the CT
itself is read back from the input folder with the pipeline's reader (nothing is
copied). Layout: docs/predict.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ichinpaint.io import read_json
from ichinpaint.volume import slice_image
from ichinpaint.windowing import brain_window


def is_predict_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "predict.json").is_file() and (folder / "series.csv").is_file()


def read_predictions(folder: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(predict.json, scored series with their flagged slices and largest volume)."""
    folder = Path(folder)
    if not is_predict_folder(folder):
        raise FileNotFoundError(f"{folder}: not a predict output folder (no predict.json)")
    counts = read_json(folder / "predict.json")
    series = pd.read_csv(folder / "series.csv", dtype=str, keep_default_na=False)
    series = series[series["status"] == "scored"].copy()
    flagged, volume = [], []
    for uid in series["series_uid"]:
        summary = read_json(folder / "series" / uid / "summary.json")
        flagged.append(int(summary["flagged_slices"]))
        largest = summary.get("largest_detection") or {}
        volume.append(float(largest.get("volume_ml", 0.0)))
    series["flagged_slices"] = flagged
    series["largest_ml"] = volume
    series = series.sort_values(["flagged_slices", "series_uid"], ascending=[False, True])
    return counts, series.reset_index(drop=True)


@dataclass(frozen=True)
class PredictedSeries:
    """One predicted series on its native grid, ``[k, row, col]`` stacks."""

    series_uid: str
    ct: np.ndarray  # uint8 brain window
    anomaly: np.ndarray  # float32, brain-window units
    detections: np.ndarray  # int: 3-D component labels (0 = none)
    table: pd.DataFrame  # series/<uid>/slices.csv
    summary: dict[str, Any]


def _stack(path: Path) -> np.ndarray:
    data = np.asarray(nib.load(path).dataobj)
    return np.stack([slice_image(data, k) for k in range(data.shape[2])])


def load_predicted_series(folder: str | Path, series_uid: str) -> PredictedSeries:
    """Maps and table from the predict folder; the CT from the DICOM files it lists."""
    from ichinpaint import dicom

    folder = Path(folder)
    out = folder / "series" / series_uid
    table = pd.read_csv(out / "slices.csv", dtype={"image_id": str, "series_uid": str})
    files = pd.read_csv(folder / "files.csv", dtype=str, keep_default_na=False)
    mine = files[(files["series_uid"] == series_uid) & (files["status"] == "scored")]
    missing = [p for p in mine["path"] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: DICOM file listed in {folder}/files.csv is gone")
    hu = dicom.load_series(list(mine["path"])).data
    anomaly = _stack(out / "anomaly.nii.gz")
    if hu.shape[2] != len(table) or anomaly.shape[0] != len(table):
        raise ValueError(
            f"{out}: {len(table)} slices in slices.csv, {hu.shape[2]} in the DICOM files, "
            f"{anomaly.shape[0]} in anomaly.nii.gz (the input folder changed since predict ran?)"
        )
    ct = np.stack([brain_window(slice_image(hu, k)) for k in range(hu.shape[2])])
    return PredictedSeries(
        series_uid=series_uid,
        ct=ct,
        anomaly=anomaly,
        detections=_stack(out / "detections.nii.gz"),
        table=table,
        summary=read_json(out / "summary.json"),
    )
