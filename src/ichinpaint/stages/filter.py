"""Pivot the RSNA labels, read every DICOM header, split by patient and account for every image.

Reads ``<raw_dir>/stage_2_train.csv`` and the headers (not the pixels) of
``<raw_dir>/stage_2_train/*.dcm`` in parallel chunks, checks that each file's PixelData
is complete, and writes one row per image seen in the CSV or on disk to `--out`
(image_id, patient_id, study_uid, series_uid, position, the six labels, split,
status, reason). Excluded images keep a reason: corrupt_pixel_data, no_label_row,
no_file, unreadable_header, incomplete_header, series_patient_conflict,
fraction_subsampled. Patients with any hemorrhage go to test with a share of healthy
patients; validation and training are healthy only. `fraction` keeps that share of
the training images by whole series, so kept slices keep their neighbours.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ichinpaint import io
from ichinpaint import params as p
from ichinpaint.preprocess.filter import COLUMNS, FilterSettings, build_slice_table

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"images": "kept", "excluded": "excluded"}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = FilterSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--raw_dir",
        default="data/raw/synthetic",
        help="RSNA-layout directory: stage_2_train/ and stage_2_train.csv",
    )
    parser.add_argument("--out", default="data/interim/slices.csv", help="per-image table to write")
    parser.add_argument(
        "--metrics", default="metrics/reports/filter.json", help="counts to write (flat JSON)"
    )
    p.add_options(parser, FilterSettings)


PARAM_RULES = p.rules_of(FilterSettings)


def check_args(args: argparse.Namespace) -> None:
    p.require(
        args.val_fraction + args.test_healthy_fraction < 1,
        f"--val_fraction {args.val_fraction} + --test_healthy_fraction "
        f"{args.test_healthy_fraction} must leave healthy patients for training (sum < 1)",
    )


def run(args: argparse.Namespace) -> str:
    settings = p.from_args(FilterSettings, args)
    table, metrics = build_slice_table(Path(args.raw_dir), **dataclasses.asdict(settings))
    with io.staged_outputs():  # the table and its counts appear together
        io.write_csv(args.out, table[COLUMNS])
        io.write_json(args.metrics, metrics)
    return (
        f"{metrics['images_total']} images: {metrics['kept']} kept, {metrics['excluded']} excluded; "
        f"train/val/test {metrics['train_images']}/{metrics['val_images']}/{metrics['test_images']} images, "
        f"{metrics['train_patients']}/{metrics['val_patients']}/{metrics['test_patients']} patients "
        f"-> {args.out}"
    )
