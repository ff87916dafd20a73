"""The per-image table of an RSNA-layout directory: labels, headers, split, exclusions.

Reads ``<raw_dir>/stage_2_train.csv`` and the headers (not the pixels) of
``<raw_dir>/stage_2_train/*.dcm`` in parallel chunks, checks that each file's PixelData
is complete, and builds one row per image seen in the CSV or on disk (image_id,
patient_id, study_uid, series_uid, position, the six labels, split, status, reason).
Excluded images keep a reason (`REASONS`: the header reasons of `ichinpaint.dicom`,
no_label_row, no_file, series_patient_conflict, fraction_subsampled) and a detail.
Patients with any hemorrhage go to test with a share of healthy patients; validation
and training are healthy only. `fraction` keeps that share of the training images by
whole series, so kept slices keep their neighbours.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ichinpaint import dicom, io, labels, splits
from ichinpaint import params as p
from ichinpaint.constants import LABELS, SUBTYPES

COLUMNS = [
    "image_id",
    "patient_id",
    "study_uid",
    "series_uid",
    "position",
    *LABELS,
    "split",
    "status",
    "reason",
    "detail",
]
NO_FILE = "no_file"
NO_LABEL_ROW = "no_label_row"
SERIES_PATIENT_CONFLICT = "series_patient_conflict"
FRACTION_SUBSAMPLED = "fraction_subsampled"
REASONS = (
    *dicom.HEADER_REASONS,
    NO_LABEL_ROW,
    NO_FILE,
    SERIES_PATIENT_CONFLICT,
    FRACTION_SUBSAMPLED,
)
CHUNK_FILES = 2000  # files per parallel task: 752k files -> ~380 tasks
SHOWN = 5  # excluded images listed with their details on stderr


@dataclass(frozen=True)
class FilterSettings:
    """The ``filter`` params."""

    val_fraction: float = p.setting(
        0.3,
        "share of healthy patients for validation",
        rule=p.between(0, 1, low_open=True, high_open=True),
    )
    test_healthy_fraction: float = p.setting(
        0.3,
        "share of healthy patients held out for test (all hemorrhage patients are test)",
        rule=p.between(0, 1, low_open=True, high_open=True),
    )
    fraction: float = p.setting(
        1.0,
        "share of healthy training images to keep, by whole series",
        rule=p.between(0, 1, low_open=True),
    )
    seed: int = p.setting(0, "seed of the patient split and the subsampling", rule=p.SEED)
    n_jobs: int = p.setting(-1, "processes reading headers (-1: all cores)", rule=p.N_JOBS)


def read_table(path: str | Path) -> pd.DataFrame:
    """The per-image table this stage writes, identifiers as strings (the nifti stage's input)."""
    identifiers = ("image_id", "series_uid", "patient_id", "study_uid", "split")
    return pd.read_csv(path, dtype=dict.fromkeys(identifiers, str), keep_default_na=False)


def list_dicom_files(image_dir: Path) -> list[str]:
    """Every ``*.dcm`` entry of the image directory, sorted (the order of the output).

    Entries that are not readable files (a directory named ``*.dcm``, a looping or
    dangling link) are listed too: `dicom.read_header` excludes them with a reason,
    so nothing named like an image disappears without a row.
    """
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image directory not found (expected RSNA layout)")
    with os.scandir(image_dir) as entries:
        return sorted(e.path for e in entries if e.name.endswith(".dcm"))


def chunked(items: list[str], n_jobs: int) -> list[list[str]]:
    """Chunks small enough to spread over the workers, large enough to amortise a task."""
    workers = io.resolve_n_jobs(n_jobs)
    size = max(1, min(CHUNK_FILES, math.ceil(len(items) / (4 * workers))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_all_headers(paths: list[str], n_jobs: int) -> pd.DataFrame:
    """Header records of every file (see `dicom.read_header`), one row per file."""
    chunks = chunked(paths, n_jobs)
    results = io.parallel_map(
        dicom.read_headers,
        chunks,
        n_jobs=n_jobs,
        desc=f"headers ({len(paths)} files)",
        unit="chunk",
    )
    records = [r for chunk in results for r in chunk]
    return pd.DataFrame.from_records(records, columns=list(dicom.HEADER_COLUMNS))


def merge_files_and_labels(headers: pd.DataFrame, wide: pd.DataFrame) -> pd.DataFrame:
    """Outer join of files and label rows: one row per image ID, with the missing side named."""
    table = headers.merge(wide.reset_index(), on="image_id", how="outer", indicator=True)
    table.loc[table["_merge"] == "right_only", "reason"] = NO_FILE
    table.loc[table["_merge"] == "right_only", "detail"] = "listed in the CSV, no .dcm file"
    no_labels = (table["_merge"] == "left_only") & (table["reason"] == "")
    table.loc[no_labels, "reason"] = NO_LABEL_ROW
    table.loc[no_labels, "detail"] = "file has no row in the label CSV"
    table["reason"] = table["reason"].fillna("")
    table["detail"] = table["detail"].fillna("")
    for name in ("patient_id", "study_uid", "series_uid"):
        table[name] = table[name].fillna("")
    return table.drop(columns="_merge")


def exclude_series_with_several_patients(table: pd.DataFrame) -> None:
    """A series claimed by two patients cannot go to one split: exclude it whole."""
    usable = table["reason"] == ""
    per_series = table.loc[usable].groupby("series_uid")["patient_id"].nunique()
    bad = per_series.index[per_series > 1]
    hit = usable & table["series_uid"].isin(bad)
    table.loc[hit, "reason"] = SERIES_PATIENT_CONFLICT
    table.loc[hit, "detail"] = "series UID shared by several PatientIDs"


def assign_splits(
    table: pd.DataFrame, val_fraction: float, test_healthy_fraction: float, seed: int
) -> None:
    """Split the patients of usable images; every row of a split patient gets its split."""
    usable = table.loc[table["reason"] == ""]
    bleeding = usable[list(LABELS)].max(axis=1) > 0  # `any` or any subtype
    by_patient = bleeding.groupby(usable["patient_id"]).any()
    mapping = splits.split_patients(
        by_patient.to_dict(),
        val_fraction=val_fraction,
        test_healthy_fraction=test_healthy_fraction,
        seed=seed,
    )
    table["split"] = table["patient_id"].map(mapping).fillna("")


def subsample_training(table: pd.DataFrame, fraction: float, seed: int) -> None:
    """Exclude whole training series beyond `fraction` of the training images."""
    train = (table["reason"] == "") & (table["split"] == "train")
    sizes = table.loc[train, "series_uid"].value_counts().to_dict()
    kept = splits.subsample_series(sizes, fraction, seed)
    dropped = train & ~table["series_uid"].isin(kept)
    table.loc[dropped, "reason"] = FRACTION_SUBSAMPLED
    table.loc[dropped, "detail"] = f"training series beyond fraction {fraction:g}"


def finish_table(table: pd.DataFrame) -> pd.DataFrame:
    """Status from reason, nullable int labels, stable row order, contract columns."""
    table["status"] = np.where(table["reason"] == "", "kept", "excluded")
    for name in LABELS:
        table[name] = table[name].astype("Int8")
    table = table.sort_values(["series_uid", "position", "image_id"], na_position="last")
    return table.reset_index(drop=True)


def summarise(table: pd.DataFrame, label_table: labels.LabelTable, n_files: int) -> dict:
    """Flat counts for `dvc metrics show`; total = kept + excluded is asserted here."""
    kept = table["status"] == "kept"
    metrics = {
        "images_total": len(table),
        "kept": int(kept.sum()),
        "excluded": int((~kept).sum()),
        "files_on_disk": n_files,
        "csv_rows": label_table.rows_read,
        "csv_images": len(label_table.frame),
        "csv_duplicate_rows_dropped": label_table.duplicate_rows,
        "labels_any_mismatch": len(label_table.any_mismatch),
        "hemorrhage_images": int((table.loc[kept, "any"] == 1).sum()),
        "hemorrhage_patients": int(table.loc[kept & (table["any"] == 1), "patient_id"].nunique()),
    }
    assert metrics["images_total"] == metrics["kept"] + metrics["excluded"]
    counts = table["reason"].value_counts()
    unknown = set(counts.index) - set(REASONS) - {""}
    assert not unknown, f"reasons outside the vocabulary: {unknown}"
    for reason in REASONS:
        metrics[f"excluded_{reason}"] = int(counts.get(reason, 0))
    assert sum(metrics[f"excluded_{r}"] for r in REASONS) == metrics["excluded"]
    for name in splits.SPLITS:
        rows = table.loc[kept & (table["split"] == name)]
        metrics[f"{name}_images"] = len(rows)
        metrics[f"{name}_series"] = int(rows["series_uid"].nunique())
        metrics[f"{name}_patients"] = int(rows["patient_id"].nunique())
    return metrics


def report_examples(table: pd.DataFrame, label_table: labels.LabelTable) -> None:
    """A few excluded images with their details, so a person sees what went wrong."""
    details = table.loc[table["detail"] != "", ["image_id", "reason", "detail"]]
    for row in details.head(SHOWN).itertuples():
        print(f"filter: excluded {row.image_id}: {row.reason}: {row.detail}", file=sys.stderr)
    if label_table.any_mismatch:
        shown = label_table.any_mismatch[:SHOWN]
        print(
            f"filter: {len(label_table.any_mismatch)} image(s) whose 'any' differs from the OR of {SUBTYPES}, e.g. {shown}",
            file=sys.stderr,
        )


def build_slice_table(
    raw_dir: Path,
    *,
    val_fraction: float,
    test_healthy_fraction: float,
    fraction: float,
    seed: int,
    n_jobs: int,
) -> tuple[pd.DataFrame, dict]:
    """The whole stage without writing: the per-image table (with `detail`) and its metrics."""
    label_table = labels.read_labels(raw_dir / "stage_2_train.csv")
    paths = list_dicom_files(raw_dir / "stage_2_train")
    headers = read_all_headers(paths, n_jobs)
    table = merge_files_and_labels(headers, label_table.frame)
    exclude_series_with_several_patients(table)
    assign_splits(table, val_fraction, test_healthy_fraction, seed)
    subsample_training(table, fraction, seed)
    table = finish_table(table)
    return table, summarise(table, label_table, len(paths))
