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
import shutil
import tempfile
from pathlib import Path

from ichinpaint import io


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n_patients", type=int, default=3, help="series to write")
    parser.add_argument("--n_slices", type=int, default=16, help="5 mm axial slices per series")
    parser.add_argument("--matrix", type=int, default=256, help="image rows and columns")
    parser.add_argument(
        "--hemorrhage_fraction", type=float, default=0.67, help="share of series with bleeds"
    )
    parser.add_argument(
        "--seed", type=int, default=1000, help="generator seed (differ from synthesize's)"
    )
    parser.add_argument("--out", default="data/raw/synthetic_test", help="output folder (replaced)")


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
    with io.atomic_dir(out) as tmp:
        n = write_unlabelled(
            tmp,
            n_patients=args.n_patients,
            n_slices=args.n_slices,
            matrix=args.matrix,
            hemorrhage_fraction=args.hemorrhage_fraction,
            seed=args.seed,
        )
    return f"{n} unlabelled DICOM files ({args.n_patients} series) -> {out}"
