"""Write a small unlabelled synthetic folder shaped like Kaggle's stage_2_test/.

The `predict` stage needs a folder of DICOM files without labels to run on in the
default (synthetic) pipeline. This writes a few synthetic series with the embedded
generator (`ichinpaint.synthetic.write_dataset`, a seed of its own so no series is
shared with the training data), then keeps only the DICOM files, flat in <out>/:
no label CSV, no ground truth, as Kaggle ships stage_2_test. It is written whatever
data.source is: on real data it is a small smoke test of predict (drop the
`synth` entry of data.test_sets to skip it; add stage_2_test there).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ichinpaint import io
from ichinpaint import params as p


@dataclass(frozen=True)
class SynthesizeTestSettings:
    """The ``synthesize_test`` params, with the series shape of ``synthesize``."""

    n_patients: int = p.setting(3, "series to write", rule=p.at_least(1))
    n_slices: int = p.setting(
        32, "5 mm axial slices per series", rule=p.at_least(2), param="synthesize.n_slices"
    )
    matrix: int = p.setting(
        256, "image rows and columns", rule=p.at_least(32), param="synthesize.matrix"
    )
    hemorrhage_fraction: float = p.setting(
        0.67, "share of series with bleeds", rule=p.between(0, 1)
    )
    seed: int = p.setting(1000, "generator seed (differ from synthesize's)", rule=p.SEED)


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = SynthesizeTestSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p.add_options(parser, SynthesizeTestSettings)
    parser.add_argument("--out", default="data/raw/synthetic_test", help="output folder (replaced)")


PARAM_RULES = p.rules_of(SynthesizeTestSettings)


def write_unlabelled(
    out: Path, *, n_patients: int, n_slices: int, matrix: int, hemorrhage_fraction: float, seed: int
) -> int:
    """Synthesize into a scratch folder and move only the DICOM files into `out`."""
    from ichinpaint.synthetic import write_dataset

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ichinpaint-test-") as scratch:
        write_dataset(
            scratch,
            n_patients=n_patients,
            n_slices=n_slices,
            matrix=matrix,
            hemorrhage_fraction=hemorrhage_fraction,
            seed=seed,
            sheet=False,
        )
        files = sorted((Path(scratch) / "stage_2_train").glob("*.dcm"))
        for path in files:
            shutil.move(str(path), out / path.name)
    return len(files)


def run(args: argparse.Namespace) -> str:
    out = Path(args.out)
    settings = p.from_args(SynthesizeTestSettings, args)
    with io.atomic_dir(out) as tmp:
        n = write_unlabelled(tmp, **dataclasses.asdict(settings))
    return f"{n} unlabelled DICOM files ({args.n_patients} series) -> {out}"
