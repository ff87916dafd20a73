"""Stack each series of kept images into one int16 HU NIfTI volume with a correct RAS affine.

Reads the `kept` rows of slices.csv, groups them by series, and for each series
reads its DICOM files from ``<raw_dir>/stage_2_train``, sorts the slices along the
slice normal, decodes HU (RSNA 12-bit fix included) and writes
``<series_uid>.nii.gz`` (``data[col, row, k]``, affine from IPP/IOP/PixelSpacing with
any gantry tilt kept, not resampled) plus a ``<series_uid>.json`` sidecar with the
image IDs in slice order. Series that cannot be stacked without guessing (one slice,
mixed matrix or pixel spacing, inconsistent orientation, duplicate positions, uneven
spacing, a slice that fails to decode, a series UID or image ID that cannot name a file)
are refused with their reason, listed in ``series.csv`` beside the volumes and counted
in the metrics. Slices whose HU lie far outside the physical range are kept and
flagged (sidecar ``hu_flagged``, series.csv ``n_hu_flagged`` and ``detail``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ichinpaint import io
from ichinpaint import params as p
from ichinpaint.preprocess.filter import read_table
from ichinpaint.preprocess.nifti import (
    SERIES_COLUMNS,
    NiftiSettings,
    convert_series,
    series_tasks,
    summarise,
)

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"images": "images_written", "excluded": "images_refused"}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = NiftiSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--raw_dir",
        default="data/raw/synthetic",
        help="RSNA-layout directory holding stage_2_train/",
    )
    parser.add_argument(
        "--slices", default="data/interim/slices.csv", help="per-image table from the filter stage"
    )
    parser.add_argument(
        "--out",
        default="data/interim/nifti",
        help="directory of volumes and sidecars (replaced whole)",
    )
    parser.add_argument(
        "--metrics", default="metrics/reports/nifti.json", help="counts to write (JSON)"
    )
    p.add_options(parser, NiftiSettings)


PARAM_RULES = p.rules_of(NiftiSettings)


def run(args: argparse.Namespace) -> str:
    slices = read_table(args.slices)
    settings = p.from_args(NiftiSettings, args)
    kept_images = int((slices["status"] == "kept").sum())
    image_dir = Path(args.raw_dir) / "stage_2_train"
    with io.atomic_dir(args.out) as tmp:
        tasks = series_tasks(slices, image_dir, tmp, settings.spacing_tolerance)
        results = io.parallel_map(
            convert_series, tasks, n_jobs=settings.n_jobs, desc="series", unit="series"
        )
        table = pd.DataFrame(results, columns=SERIES_COLUMNS)
        io.write_csv(tmp / "series.csv", table)
    metrics = summarise(table, kept_images)
    io.write_json(args.metrics, metrics)
    return (
        f"{metrics['series_written']} volumes ({metrics['images_written']} slices, "
        f"{metrics['series_tilted']} tilted), {metrics['series_refused']} series refused "
        f"({metrics['images_refused']} slices) -> {args.out}"
    )
