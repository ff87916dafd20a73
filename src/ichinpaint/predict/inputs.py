"""Every file of an input folder, with its header and image ID, or why it is skipped.

File names and order carry no meaning: series come from SeriesInstanceUID and slice
order from ImagePositionPatient (`ichinpaint.dicom`, the filter stage's reader). The
image ID is the SOPInstanceUID (in RSNA data ``ID_<hex>``, the file name Kaggle uses),
so renamed files keep their identity; the file name is the fallback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ichinpaint import dicom, io
from ichinpaint.preprocess.filter import chunked

FILE_COLUMNS: tuple[str, ...] = (
    "path",
    "image_id",
    "study_uid",
    "series_uid",
    "position",
    "reason",
    "detail",
)
DUPLICATE_IMAGE_ID = "duplicate_image_id"
SKIP_REASONS: tuple[str, ...] = (
    dicom.UNREADABLE_HEADER,
    dicom.INCOMPLETE_HEADER,
    dicom.CORRUPT_PIXEL_DATA,
    DUPLICATE_IMAGE_ID,
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def list_input_files(folder: str | Path) -> list[Path]:
    """Every regular file under `folder` (recursively, hidden ones left out), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no files to read")
    return files


def sop_instance_uid(path: str | Path) -> str | None:
    """The SOPInstanceUID when the file has a usable one (safe as a file name), else None."""
    import pydicom

    try:
        with dicom.quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            value = str(ds.get("SOPInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - an unreadable file is reported by read_header
        return None
    return value if _SAFE_ID.match(value) else None


def read_input_headers(paths: list[str]) -> list[tuple]:
    """Header records (FILE_COLUMNS order) of a chunk of files; never raises for a bad file."""
    rows = []
    for path in paths:
        record = dicom.read_header(path)
        record["path"] = str(path)
        record["image_id"] = sop_instance_uid(path) or Path(path).stem
        rows.append(tuple(record[name] for name in FILE_COLUMNS))
    return rows


def scan_inputs(folder: str | Path, n_jobs: int = 1) -> pd.DataFrame:
    """One row per file: FILE_COLUMNS; `reason` empty for a usable image."""
    paths = [
        str(p.resolve()) for p in list_input_files(folder)
    ]  # absolute: the app reads them back
    chunks = chunked(paths, n_jobs)
    results = io.parallel_map(
        read_input_headers,
        chunks,
        n_jobs=n_jobs,
        desc=f"headers ({len(paths)} files)",
        unit="chunk",
    )
    table = pd.DataFrame([r for chunk in results for r in chunk], columns=list(FILE_COLUMNS))
    mark_duplicate_ids(table)
    return table


def mark_duplicate_ids(table: pd.DataFrame) -> None:
    """Two usable files with one image ID: the first (by path) is used, the others skipped."""
    usable = table.loc[table["reason"] == "", ["image_id", "path"]]
    first_path = dict(usable.drop_duplicates("image_id").itertuples(index=False))
    for index in usable.index[usable["image_id"].duplicated(keep="first")]:
        table.loc[index, "reason"] = DUPLICATE_IMAGE_ID
        table.loc[index, "detail"] = f"same image ID as {first_path[table.loc[index, 'image_id']]}"
