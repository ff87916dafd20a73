"""Write the embedded synthetic head-CT dataset in the RSNA layout, with ground truth.

Each patient gets one 5 mm axial series rendered from the MNI152 templates bundled with
nilearn (skull, scalp, grey/white matter, CSF), deformed, scaled and rotated per
patient; a share of the patients get bleeds of the five RSNA subtypes. The DICOM files,
stage_2_train.csv and the real data's quirks mimic the Kaggle download, and
ground_truth/ holds lesion and brain masks on the grid the nifti stage builds. With
--source other than "synthetic" only <out>/SKIPPED.txt is written (the pipeline then
reads the real data from data.raw_dir). See docs/synthetic-data.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint import io
from ichinpaint import params as p
from ichinpaint.synthetic import write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n_patients", type=int, default=40, help="patients (one series each)")
    parser.add_argument(
        "--n_slices", type=int, default=32, help="5 mm axial slices per series (the most)"
    )
    parser.add_argument(
        "--min_slices",
        type=int,
        default=20,
        help="fewest slices; lengths are drawn from min_slices..n_slices (>= n_slices: all equal)",
    )
    parser.add_argument("--matrix", type=int, default=256, help="image rows and columns (pixels)")
    parser.add_argument(
        "--hemorrhage_fraction",
        type=float,
        default=0.35,
        help="share of patients with bleeds (each subtype appears before any repeats)",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical output")
    parser.add_argument(
        "--n_jobs", type=int, default=-1, help="series rendered in parallel (-1 = all cores)"
    )
    parser.add_argument(
        "--source",
        default="synthetic",
        help='data.source: anything but "synthetic" writes only <out>/SKIPPED.txt',
    )
    parser.add_argument("--out", default="data/raw/synthetic", help="output directory (replaced)")


PARAM_RULES = {
    "n_patients": p.at_least(3),  # the filter stage needs train, val and test patients
    "n_slices": p.at_least(2),
    "min_slices": p.at_least(2),
    "matrix": p.at_least(32),
    "hemorrhage_fraction": p.between(0, 1),
    "seed": p.SEED,
    "n_jobs": p.N_JOBS,
}


def run(args: argparse.Namespace) -> str:
    out = Path(args.out)
    if args.source != "synthetic":
        with io.atomic_dir(out) as tmp:
            (tmp / "SKIPPED.txt").write_text(_skip_note(args.source))
        return f"skipped: data.source is {args.source!r}, not 'synthetic' (see {out}/SKIPPED.txt)"
    with io.atomic_dir(out) as tmp:
        counts = write_dataset(
            tmp,
            n_patients=args.n_patients,
            n_slices=args.n_slices,
            min_slices=args.min_slices,
            matrix=args.matrix,
            hemorrhage_fraction=args.hemorrhage_fraction,
            seed=args.seed,
            n_jobs=args.n_jobs,
        )
    quirks = sum(v for k, v in counts.items() if k.startswith("quirk_"))
    return (
        f"{counts['patients']} series, {counts['images']} images "
        f"({counts['hemorrhage_series']} series with hemorrhage), {counts['csv_rows']} CSV rows, "
        f"{quirks} quirk rows -> {out}"
    )


def _skip_note(source: str) -> str:
    return (
        f"The synthetic dataset was not generated: data.source is {source!r}.\n"
        "The pipeline reads the real RSNA data from data.raw_dir (params.yaml):\n"
        "stage_2_train/ with the DICOM files and stage_2_train.csv; see docs/real-data.md.\n"
        "Set data.source: synthetic to generate the embedded dataset here instead.\n"
    )
