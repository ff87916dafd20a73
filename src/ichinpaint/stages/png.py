"""Export every slice of every series as brain-window PNGs on the model grid, with the slice manifest.

For each HU volume (nifti stage) and its brain mask (mask stage), slice k becomes
<out>/png/<series_uid>/<image_id>.png (8-bit brain window, padded/cropped to `canvas`,
area-resized to `img_size`) and <image_id>_mask.png (0/255, nearest). All slices are
exported so that the neighbours above/below always exist; the mid-range filter only
marks slices `use = False` in <out>/slices.csv. Labels come from the filter stage's
slices.csv.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from ichinpaint import params as p
from ichinpaint.io import atomic_dir, parallel_map, write_csv, write_json
from ichinpaint.niftidir import list_volumes
from ichinpaint.preprocess.png import (
    PngSettings,
    attach_labels,
    count_per_split,
    export_series,
    read_labels,
)

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"images": "slices_used", "excluded": "slices_dropped"}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = PngSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nifti", default="data/interim/nifti", help="HU volumes + JSON sidecars (nifti stage)"
    )
    parser.add_argument(
        "--masks", default="data/interim/brainmask", help="brain masks (mask stage)"
    )
    parser.add_argument(
        "--slices", default="data/interim/slices.csv", help="per-image labels (filter stage)"
    )
    parser.add_argument("--out", default="data/processed", help="output directory (replaced whole)")
    parser.add_argument(
        "--metrics", default="metrics/reports/png.json", help="slice counts per split (JSON)"
    )
    p.add_options(parser, PngSettings)


PARAM_RULES = p.rules_of(PngSettings)


def run(args: argparse.Namespace) -> str:
    volumes = list_volumes(args.nifti)
    if not volumes:
        raise FileNotFoundError(f"no volumes in {args.nifti}")
    settings = p.from_args(PngSettings, args)
    labels = read_labels(args.slices)
    with atomic_dir(args.out) as tmp:
        work = functools.partial(
            export_series,
            masks_dir=Path(args.masks),
            tmp_dir=tmp,
            out_dir=Path(args.out),
            canvas=settings.canvas,
            img_size=settings.img_size,
            min_fraction=settings.midrange_min_fraction,
        )
        per_series = parallel_map(
            work, volumes, n_jobs=settings.n_jobs, desc="png export", unit="series"
        )
        manifest = attach_labels([row for rows in per_series for row in rows], labels, args.slices)
        write_csv(tmp / "slices.csv", manifest)
    metrics = count_per_split(manifest, labels)
    write_json(args.metrics, metrics)
    return (
        f"{metrics['slices_exported']} slices of {metrics['series']} series exported, "
        f"{metrics['slices_used']} used, {metrics['slices_dropped']} dropped by the mid-range filter"
    )
