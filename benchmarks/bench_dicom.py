"""Speed of the filter and nifti stages, and of dcm2niix on the same series.

Prints a table of slices per second. By default it writes a synthetic RSNA-layout
dataset (``ichinpaint.synthetic.write_dataset``) into a temporary directory; with
``--raw_dir`` it measures an existing one instead (for example a subset of the real
download). dcm2niix converts the same kept series, one folder of links per series
(so it sees exactly the images the nifti stage stacks), single-threaded with the same
gzip level as nibabel's default (1), so the comparison is like for like. Rows with
n_jobs > 1 include the process pool's start-up (seconds, paid once per stage run),
which dominates small sets. Each figure is the fastest of --repeat runs.

    .venv/bin/python benchmarks/bench_dicom.py --n_patients 8 --n_slices 24 --matrix 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ichinpaint import cli, dicom


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--raw_dir",
        default="",
        help="existing RSNA-layout directory (default: write a synthetic one)",
    )
    parser.add_argument("--n_patients", type=int, default=8)
    parser.add_argument("--n_slices", type=int, default=24)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument(
        "--n_jobs", type=int, nargs="+", default=[1, 2], help="worker counts to measure"
    )
    parser.add_argument(
        "--workdir", default="", help="where to write (default: a temporary directory)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per measurement; the fastest is shown"
    )
    return parser.parse_args()


REPEAT = 1  # set from --repeat: the fastest of this many runs is reported


def timed(fn) -> float:
    """Fastest wall time of REPEAT runs (the machine is shared: the minimum is the signal)."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_synthetic(root: Path, args: argparse.Namespace) -> Path:
    from ichinpaint import synthetic

    synthetic.write_dataset(
        root,
        n_patients=args.n_patients,
        n_slices=args.n_slices,
        matrix=args.matrix,
        hemorrhage_fraction=0.5,
        seed=0,
    )
    return root


def run_stage(argv: list[str]) -> None:
    cli.main(argv)


def dcm2niix_binary() -> str:
    found = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    if not Path(found).exists():
        raise SystemExit("dcm2niix not found: install the dev extra (pip package dcm2niix)")
    return found


def series_folders(slices: pd.DataFrame, image_dir: Path, root: Path) -> list[Path]:
    """One folder of links per kept series, so dcm2niix sees the same series we stack."""
    folders = []
    kept = slices.loc[slices["status"] == "kept"]
    for uid, rows in kept.groupby("series_uid"):
        folder = root / str(uid)
        folder.mkdir(parents=True, exist_ok=True)
        for image_id in rows["image_id"]:
            os.symlink((image_dir / f"{image_id}.dcm").resolve(), folder / f"{image_id}.dcm")
        folders.append(folder)
    return folders


def run_dcm2niix(folders: list[Path], out: Path) -> None:
    binary = dcm2niix_binary()
    for folder in folders:
        target = out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                binary,
                "-z",
                "i",
                "-1",
                "-b",
                "n",
                "-i",
                "n",
                "-f",
                "%j",
                "-o",
                str(target),
                str(folder),
            ],
            check=True,
            capture_output=True,
        )


def main() -> None:
    global REPEAT
    args = parse_args()
    REPEAT = args.repeat
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_dicom."))
    raw = Path(args.raw_dir) if args.raw_dir else write_synthetic(work / "raw", args)
    image_dir = raw / "stage_2_train"
    n_files = sum(1 for _ in os.scandir(image_dir))
    rows = []

    paths = sorted(str(p) for p in image_dir.glob("*.dcm"))
    for path in paths:  # warm the page cache: measure decoding, not the first disk read
        Path(path).read_bytes()
    seconds = timed(lambda: dicom.read_headers(paths))
    rows.append(("header read only (1 process)", 1, n_files, seconds))

    for n_jobs in args.n_jobs:
        out = work / f"out{n_jobs}"
        seconds = timed(
            lambda out=out, n_jobs=n_jobs: run_stage(
                ["filter", "--raw_dir", str(raw), "--out", str(out / "slices.csv"),
                 "--metrics", str(out / "filter.json"), "--n_jobs", str(n_jobs)]
            )
        )  # fmt: skip
        rows.append(("filter stage", n_jobs, n_files, seconds))
    slices = pd.read_csv(work / f"out{args.n_jobs[0]}" / "slices.csv")
    kept = int((slices["status"] == "kept").sum())
    for n_jobs in args.n_jobs:
        out = work / f"out{n_jobs}"
        seconds = timed(
            lambda out=out, n_jobs=n_jobs: run_stage(
                ["nifti", "--raw_dir", str(raw), "--slices", str(out / "slices.csv"),
                 "--out", str(out / "nifti"), "--metrics", str(out / "nifti.json"), "--n_jobs", str(n_jobs)]
            )
        )  # fmt: skip
        rows.append(("nifti stage", n_jobs, kept, seconds))

    folders = series_folders(slices, image_dir, work / "by_series")
    seconds = timed(lambda: run_dcm2niix(folders, work / "dcm2niix"))
    rows.append(("dcm2niix, one call per series", 1, kept, seconds))

    table = pd.DataFrame(rows, columns=["what", "n_jobs", "slices", "seconds"])
    table["slices_per_s"] = table["slices"] / table["seconds"]
    table["hours_for_752k"] = 752_803 / table["slices_per_s"] / 3600
    print(f"\n{n_files} files in {raw} ({len(folders)} kept series), {os.cpu_count()} CPU cores\n")
    print(
        table.to_markdown(index=False, floatfmt=".2f")
        if _has_tabulate()
        else table.round(2).to_string(index=False)
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
