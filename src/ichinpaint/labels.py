"""The RSNA label CSV: validated, de-duplicated and pivoted to one row per image.

``stage_2_train.csv`` has a header ``ID,Label`` and six rows per image,
``ID_<hex>_<subtype>``. The real file lists a few images twice with identical rows
(dropped and counted); two rows for the same ID with different labels cannot be
resolved without guessing, so they stop the pipeline with the IDs named. The whole
file (4.5M rows for the real data) is handled with vectorised pandas operations.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ichinpaint.constants import LABELS, SUBTYPES

ID_PATTERN = re.compile(r"^(ID_[0-9a-fA-F]+)_(" + "|".join(LABELS) + r")$")
SHOWN = 10  # how many offending rows an error message lists


class LabelError(ValueError):
    """The label CSV is malformed or contradicts itself."""


@dataclass
class LabelTable:
    """Labels per image plus what cleaning them found.

    `frame` is indexed by image_id with one int8 column per label (LABELS order);
    `any_mismatch` lists images whose `any` differs from the OR of the five subtypes.
    """

    frame: pd.DataFrame
    rows_read: int
    duplicate_rows: int
    any_mismatch: list[str]


def _examples(frame: pd.DataFrame, mask: pd.Series) -> str:
    rows = frame.loc[mask].head(SHOWN)
    shown = ", ".join(f"line {i + 2}: {r.ID!r},{r.Label!r}" for i, r in rows.iterrows())
    more = int(mask.sum()) - len(rows)
    return shown + (f" (+{more} more)" if more > 0 else "")


def csv_encoding(path: Path) -> str:
    """UTF-8 unless a byte-order mark says UTF-16 (a CSV saved by a spreadsheet program)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig"  # also strips a UTF-8 byte-order mark


def read_label_rows(path: str | os.PathLike) -> pd.DataFrame:
    """The CSV's rows, validated: columns ``ID, Label`` as strings, Labels 0/1.

    UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark are
    read; CRLF line ends are fine. Any other encoding stops with the file named.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=csv_encoding(path))
    except UnicodeDecodeError as exc:
        raise LabelError(
            f"{path}: not UTF-8 or UTF-16 text (byte {exc.start}: {exc.reason}); "
            "save the label CSV as UTF-8"
        ) from exc
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LabelError(f"{path}: cannot read the label CSV: {exc}") from exc
    if list(frame.columns) != ["ID", "Label"]:
        raise LabelError(f"{path}: header must be 'ID,Label', found {','.join(frame.columns)!r}")
    frame["ID"] = frame["ID"].str.strip()
    frame["Label"] = frame["Label"].str.strip()
    bad_id = ~frame["ID"].str.match(ID_PATTERN.pattern)
    if bad_id.any():
        raise LabelError(
            f"{path}: {int(bad_id.sum())} malformed ID(s), expected ID_<hex>_<subtype> with "
            f"subtype in {LABELS}: {_examples(frame, bad_id)}"
        )
    bad_label = ~frame["Label"].isin(["0", "1"])
    if bad_label.any():
        raise LabelError(
            f"{path}: {int(bad_label.sum())} label(s) not 0 or 1: {_examples(frame, bad_label)}"
        )
    return frame


def drop_duplicate_rows(frame: pd.DataFrame, path: str | os.PathLike) -> tuple[pd.DataFrame, int]:
    """Drop identical repeated rows (counted); refuse the same ID with different labels."""
    duplicated = frame.duplicated(keep="first")
    unique = frame.loc[~duplicated]
    conflicting = unique["ID"].duplicated(keep=False)
    if conflicting.any():
        ids = sorted(unique.loc[conflicting, "ID"].unique())
        raise LabelError(
            f"{path}: {len(ids)} ID(s) listed with different labels, cannot choose: "
            f"{ids[:SHOWN]}" + (f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else "")
        )
    return unique, int(duplicated.sum())


def pivot_labels(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """One row per image, one int8 column per label; every image needs all six rows."""
    parts = frame["ID"].str.extract(ID_PATTERN.pattern)
    long = pd.DataFrame(
        {"image_id": parts[0], "label": parts[1], "value": frame["Label"].astype("int8")}
    )
    wide = long.pivot(index="image_id", columns="label", values="value")
    wide = wide.reindex(columns=list(LABELS))
    incomplete = wide.isna().any(axis=1)
    if incomplete.any():
        ids = list(wide.index[incomplete])
        missing = {i: [c for c in LABELS if pd.isna(wide.at[i, c])] for i in ids[:SHOWN]}
        raise LabelError(
            f"{path}: {len(ids)} image(s) lack some of the six label rows: {missing}"
            + (f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else "")
        )
    wide = wide.astype("int8")
    wide.columns.name = None
    return wide


def any_label_mismatch(wide: pd.DataFrame) -> list[str]:
    """Images whose `any` label is not the OR of the five subtype labels."""
    implied = wide[list(SUBTYPES)].max(axis=1)
    return list(wide.index[wide["any"] != implied])


def read_labels(path: str | os.PathLike) -> LabelTable:
    """Read, check, de-duplicate and pivot the RSNA label CSV."""
    rows = read_label_rows(path)
    unique, n_duplicates = drop_duplicate_rows(rows, path)
    wide = pivot_labels(unique, path)
    return LabelTable(
        frame=wide,
        rows_read=len(rows),
        duplicate_rows=n_duplicates,
        any_mismatch=any_label_mismatch(wide),
    )
