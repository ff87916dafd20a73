"""The slice manifest, ``data/processed/slices.csv``: the one owner of its format.

The png stage writes it (``export.attach_labels``); training, detection, evaluation and
the review app read it. Everything about the file lives here, so that its readers
cannot drift apart: the column list, which columns each reader needs, how the ``use``
flag is parsed, the slice-completeness check and how its PNGs are loaded.

One row per exported slice (every slice of every converted series, so neighbours
always exist); paths are relative to the repository root; ``use`` is False for slices
failing the mid-range filter (``drop_reason`` then says why). Details:
docs/architecture.md, section ``png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ichinpaint import names
from ichinpaint.constants import LABELS

COLUMNS: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "patient_id",
    "split",
    "slice_index",
    "n_slices",
    "above_id",
    "below_id",
    "image_path",
    "mask_path",
    "above_path",
    "below_path",
    "midrange_fraction",
    "use",
    "drop_reason",
    *LABELS,
)
DROP_MIDRANGE = "midrange_below_min"

# What each reader relies on (subsets of COLUMNS): a reader refuses a manifest that
# lacks one of its columns, and tolerates the others being absent.
_BOOKKEEPING = ("above_id", "below_id", "midrange_fraction", "drop_reason")
FOR_DETECTION: tuple[str, ...] = tuple(c for c in COLUMNS if c not in _BOOKKEEPING)
FOR_EVALUATION: tuple[str, ...] = tuple(
    c for c in FOR_DETECTION if c not in ("above_path", "below_path")
)
FOR_TRAINING: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "split",
    "use",
    "image_path",
    "mask_path",
    "above_path",
    "below_path",
    "any",
)
assert {*FOR_TRAINING, *FOR_DETECTION, *FOR_EVALUATION} <= set(COLUMNS)

# IDs stay strings (an all-digit ID must not become a number).
_ID_DTYPES = {"image_id": str, "series_uid": str, "patient_id": str}
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def parse_use(values: pd.Series, source: str | os.PathLike) -> pd.Series:
    """The ``use`` column as real booleans; anything but True/False (or 1/0) is an error.

    A CSV round trip gives bools or the strings "True"/"False"; a blank or a typo must
    not silently drop (or keep) a slice.
    """
    text = values.astype(str).str.strip().str.lower()
    unknown = ~text.isin(_TRUE | _FALSE)
    if unknown.any():
        raise ValueError(
            f"{source}: column use must be True/False, got {values[unknown].iloc[0]!r} "
            f"({int(unknown.sum())} rows)"
        )
    return text.isin(_TRUE)


def read(
    path: str | os.PathLike,
    required: Sequence[str] = COLUMNS,
    splits: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The manifest with ``use`` as booleans and labels as ints, optionally only `splits`.

    Raises FileNotFoundError / ValueError naming the file when it is missing, lacks one
    of the `required` columns, has an unreadable ``use`` value, or a series UID or image
    ID that is not a safe file name (`ichinpaint.names`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: slice manifest not found (run the png stage)")
    frame = pd.read_csv(path, dtype=_ID_DTYPES)
    names.check_table_ids(frame, path)  # stages name files after them; a CSV can be edited
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if "use" in frame.columns:
        frame["use"] = parse_use(frame["use"], path)
    for label in LABELS:
        if label in frame.columns:
            frame[label] = frame[label].fillna(0).astype(int)
    if splits is not None:
        frame = frame[frame["split"].isin(list(splits))].copy()
    return frame


def check_complete_series(frame: pd.DataFrame, source: str | os.PathLike) -> None:
    """Every series lists slices 0..n_slices-1 exactly once (the png stage exports all)."""
    for uid, group in frame.groupby("series_uid"):
        expected = int(group["n_slices"].iloc[0])
        indices = sorted(group["slice_index"].astype(int))
        if indices != list(range(expected)):
            raise ValueError(
                f"{source}: series {uid} lists slice indices {indices[:5]}... but "
                f"n_slices={expected}; the png stage exports every slice"
            )


def read_png(path: str | os.PathLike, img_size: int | None = None) -> np.ndarray:
    """A manifest PNG (8-bit grey, ``[row, col]``) as uint8; a missing file or wrong shape is named.

    With `img_size`, the image must be ``(img_size, img_size)``: the model grid the png
    stage wrote and the model was trained on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: PNG listed in the slice manifest is missing (run `dvc repro png`)"
        )
    with Image.open(path) as image:
        if image.mode != "L":
            raise ValueError(f"{path}: expected an 8-bit grayscale PNG, got mode {image.mode}")
        array = np.asarray(image, dtype=np.uint8)
    if img_size is not None and array.shape != (img_size, img_size):
        raise ValueError(
            f"{path}: shape {array.shape} is not the model grid's ({img_size}, {img_size}); "
            "png.img_size and train.img_size must agree"
        )
    return array


def read_mask(path: str | os.PathLike, img_size: int | None = None) -> np.ndarray:
    """A brain-mask PNG (0/255) as a boolean ``[row, col]`` array."""
    return read_png(path, img_size) > 127
