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
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ichinpaint import io
from ichinpaint import params as p
from ichinpaint.synthetic import write_dataset


@dataclass(frozen=True)
class SynthesizeSettings:
    """The ``synthesize`` params."""

    n_patients: int = p.setting(
        40, "patients (one series each)", rule=p.at_least(3)
    )  # the filter stage needs train, val and test patients
    n_slices: int = p.setting(32, "5 mm axial slices per series (the most)", rule=p.at_least(2))
    min_slices: int = p.setting(
        20,
        "fewest slices; lengths are drawn from min_slices..n_slices (>= n_slices: all equal)",
        rule=p.at_least(2),
    )
    matrix: int = p.setting(256, "image rows and columns (pixels)", rule=p.at_least(32))
    hemorrhage_fraction: float = p.setting(
        0.35,
        "share of patients with bleeds (each subtype appears before any repeats)",
        rule=p.between(0, 1),
    )
    seed: int = p.setting(0, "same seed, byte-identical output", rule=p.SEED)
    n_jobs: int = p.setting(-1, "series rendered in parallel (-1 = all cores)", rule=p.N_JOBS)
    source: str = p.setting(
        "synthetic",
        'data.source: anything but "synthetic" writes only <out>/SKIPPED.txt',
        param="data.source",
    )


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = SynthesizeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p.add_options(parser, SynthesizeSettings)
    parser.add_argument("--out", default="data/raw/synthetic", help="output directory (replaced)")


PARAM_RULES = p.rules_of(SynthesizeSettings)


def run(args: argparse.Namespace) -> str:
    out = Path(args.out)
    settings = p.from_args(SynthesizeSettings, args)
    if settings.source != "synthetic":
        with io.atomic_dir(out) as tmp:
            (tmp / "SKIPPED.txt").write_text(_skip_note(settings.source))
        return (
            f"skipped: data.source is {settings.source!r}, not 'synthetic' (see {out}/SKIPPED.txt)"
        )
    dataset = {k: v for k, v in dataclasses.asdict(settings).items() if k != "source"}
    with io.atomic_dir(out) as tmp:
        counts = write_dataset(tmp, **dataset)
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
