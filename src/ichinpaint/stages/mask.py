"""Extract the brain from every HU volume: one uint8 0/1 mask per series on the same grid.

Reads data/interim/nifti/<series_uid>.nii.gz, writes <out>/<series_uid>.nii.gz with the
source affine, and measures Dice against <ground_truth>/<series_uid>/brain.nii.gz
where that file exists (the synthetic data; real data has none).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from ichinpaint import params as p
from ichinpaint.io import atomic_dir, parallel_map, write_json
from ichinpaint.niftidir import NIFTI_SUFFIX, list_volumes
from ichinpaint.preprocess.mask import MaskSettings, mask_one_series, summarise, write_overlay

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"images": "slices", "dice": "dice_mean"}  # lesion_inside_mask: in the report


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = MaskSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nifti", default="data/interim/nifti", help="directory of HU volumes (nifti stage)"
    )
    parser.add_argument(
        "--ground_truth",
        default="data/raw/synthetic/ground_truth",
        help="directory with <series_uid>/brain.nii.gz; Dice is skipped for series without one",
    )
    parser.add_argument("--out", default="data/interim/brainmask", help="output directory of masks")
    parser.add_argument(
        "--metrics", default="metrics/reports/mask.json", help="Dice and counts (JSON)"
    )
    p.add_options(parser, MaskSettings)
    parser.add_argument(
        "--overlay",
        default="metrics/mask_overlay.png",
        help="PNG of mask outlines (red; ground truth green) on a few series; empty to skip",
    )


PARAM_RULES = p.rules_of(MaskSettings)


def check_args(args: argparse.Namespace) -> None:
    p.require(
        args.method != "model" or bool(args.model_path),
        "--method model needs --model_path (a TorchScript brain-extraction model)",
    )


def run(args: argparse.Namespace) -> str:
    volumes = list_volumes(args.nifti)
    if not volumes:
        raise FileNotFoundError(f"no *{NIFTI_SUFFIX} volumes in {args.nifti}")
    settings = p.from_args(MaskSettings, args)
    work = functools.partial(
        mask_one_series,
        truth_dir=Path(args.ground_truth),
        method=settings.method,
        options=settings.method_options(),
    )
    with atomic_dir(args.out) as tmp:
        rows = parallel_map(
            functools.partial(work, out_dir=tmp),
            volumes,
            n_jobs=settings.n_jobs,
            desc="brain masks",
            unit="series",
        )
    metrics = summarise(rows, args.method)
    write_json(args.metrics, metrics)
    if args.overlay:
        write_overlay(volumes, Path(args.out), Path(args.ground_truth), args.overlay)
    dice_text = (
        f", Dice mean {metrics['dice_mean']:.4f} min {metrics['dice_min']:.4f} on {metrics['series_with_ground_truth']}"
        if "dice_mean" in metrics
        else ", no ground truth"
    )
    return f"{len(rows)} series masked with {args.method}{dice_text}; empty masks: {metrics['empty_masks']}"
