"""Preprocessing at RSNA scale: filter and nifti throughput and peak memory vs. file count.

The RSNA training set is 752,803 DICOM files. This writes a small synthetic
RSNA-layout set once (``ichinpaint.synthetic.write_dataset``), then clones it with
pydicom into a large one: every copy gets new file names (image IDs), SOP/Series/
Study instance UIDs and patient IDs, and its own rows in ``stage_2_train.csv``, so
the stages see N distinct files, series and patients (quirks included, cloned with
the rest). Cloning is ~100x faster than synthesising, and what the stages pay for
at scale is the file count, header parsing and pixel decoding, not the anatomy.

For each size in ``--sizes`` (nested prefixes of the clone set: the first N copies)
it runs the filter and nifti stages as subprocesses (``n_jobs`` as given), polls the
process tree's resident memory (the stage and its joblib workers, summed), and
prints files/s, peak RSS and the hours extrapolated to 752,803 files. A second set
at a 512 x 512 matrix (``--big_files``) measures the pixel-decoding cost of real-sized
images. Run it niced on a shared machine:

    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --sizes 5000 10000 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pydicom

RSNA_FILES = 752_803


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[5000, 10000, 20000], help="file counts"
    )
    parser.add_argument("--matrix", type=int, default=64, help="matrix of the large set")
    parser.add_argument(
        "--big_files", type=int, default=1000, help="files of the 512 x 512 set (0 = skip)"
    )
    parser.add_argument(
        "--n_jobs",
        type=int,
        nargs="+",
        default=[1],
        help="worker counts (the extrapolation uses 1: worker CPU time is not always counted)",
    )
    parser.add_argument("--base_patients", type=int, default=16, help="patients synthesised")
    parser.add_argument("--n_slices", type=int, default=32, help="slices per series")
    parser.add_argument("--workdir", default="", help="where to write (default: a temp dir)")
    parser.add_argument("--skip_nifti", action="store_true", help="filter only")
    return parser.parse_args()


# -- a large RSNA-layout set from a small one -------------------------------------------


def synthesise_base(root: Path, n_patients: int, n_slices: int, matrix: int) -> Path:
    from ichinpaint import synthetic

    synthetic.write_dataset(
        root, n_patients=n_patients, n_slices=n_slices, matrix=matrix, seed=0, sheet=False
    )
    return root


def clone_dataset(base: Path, out: Path, n_files: int) -> int:
    """Whole copies of `base` with fresh IDs and UIDs until `out` holds >= `n_files` files.

    Copy ``c`` of image ``ID_<9 hex>`` is ``ID_<c as 3 hex><last 6 hex>``, so IDs stay
    in the RSNA pattern and never collide; every CSV row is copied the same way (images
    listed without a file and duplicated rows included). Returns the files written.
    """
    files = sorted((base / "stage_2_train").glob("*.dcm"))
    if len({f.stem[-6:] for f in files}) != len(files):
        raise ValueError(f"{base}: image IDs collide on their last 6 hex digits; change the seed")
    labels = pd.read_csv(base / "stage_2_train.csv", dtype=str)
    images = out / "stage_2_train"
    images.mkdir(parents=True, exist_ok=True)
    datasets = [(f, pydicom.dcmread(f, force=True)) for f in files]
    keywords = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID")
    originals = [{k: str(ds.get(k)) for k in keywords if k in ds} for _, ds in datasets]
    copies = -(-n_files // len(files))
    label_parts = []
    for copy in range(copies):
        for (source, ds), values in zip(datasets, originals, strict=True):
            for keyword, value in values.items():
                setattr(ds, keyword, clone_uid(value, copy))
            ds.save_as(images / f"{clone_id(source.stem, copy)}.dcm")
        rows = labels.copy()
        image, subtype = (
            rows["ID"].str.rsplit("_", n=1).str[0],
            rows["ID"].str.rsplit("_", n=1).str[1],
        )
        rows["ID"] = image.map(lambda i, c=copy: clone_id(i, c)) + "_" + subtype
        label_parts.append(rows)
    pd.concat(label_parts).to_csv(out / "stage_2_train.csv", index=False)
    return copies * len(files)


def clone_id(image_id: str, copy: int) -> str:
    return f"ID_{copy:03x}{image_id[-6:]}"


def clone_uid(value: str, copy: int) -> str:
    """RSNA-style ``ID_<hex>`` UIDs keep their style and length; dotted ones get a suffix."""
    if value.startswith("ID_"):
        return f"ID_{copy:03x}{value[6:]}"
    return f"{value}.{copy + 1}"


# -- running a stage and watching its memory ---------------------------------------------


def run_watched(argv: list[str]) -> tuple[float, float, float]:
    """Run ``ichinpaint <argv>``; return (seconds, peak RSS in MiB of the tree, CPU seconds).

    CPU seconds (user + system of the stage and its reaped workers) are what the
    extrapolation rests on: on a shared machine wall time measures the neighbours too.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-c", "import sys; from ichinpaint import cli; sys.exit(cli.main())"]
    start = time.perf_counter()
    process = psutil.Popen(command + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
                peak = max(peak, rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, stderr = process.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode != 0:
        raise RuntimeError(f"ichinpaint {argv[0]} failed:\n{stderr.decode()[-2000:]}")
    return seconds, peak, cpu


def measure(raw: Path, out: Path, n_jobs: int, skip_nifti: bool) -> list[dict]:
    n_files = sum(1 for _ in os.scandir(raw / "stage_2_train"))
    rows = []
    slices = out / "slices.csv"
    seconds, peak, cpu = run_watched(
        ["filter", "--raw_dir", str(raw), "--out", str(slices),
         "--metrics", str(out / "filter.json"), "--n_jobs", str(n_jobs)]
    )  # fmt: skip
    rows.append(
        {
            "stage": "filter",
            "files": n_files,
            "seconds": seconds,
            "cpu_s": cpu,
            "peak_rss_mib": peak,
        }
    )
    if not skip_nifti:
        table = pd.read_csv(slices, usecols=["status"])
        kept = int((table["status"] == "kept").sum())
        seconds, peak, cpu = run_watched(
            ["nifti", "--raw_dir", str(raw), "--slices", str(slices), "--out",
             str(out / "nifti"), "--metrics", str(out / "nifti.json"), "--n_jobs", str(n_jobs)]
        )  # fmt: skip
        rows.append(
            {
                "stage": "nifti",
                "files": kept,
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_rss_mib": peak,
            }
        )
    for row in rows:
        row["n_jobs"] = n_jobs
    return rows


def main() -> None:
    args = parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale."))
    results = []
    sets = [(f"{args.matrix}x{args.matrix}", args.matrix, size) for size in sorted(args.sizes)]
    if args.big_files:
        sets.append(("512x512", 512, args.big_files))
    bases: dict[int, Path] = {}
    for label, matrix, size in sets:
        if matrix not in bases:
            start = time.perf_counter()
            patients = args.base_patients if matrix < 512 else 8
            bases[matrix] = synthesise_base(work / f"base{matrix}", patients, args.n_slices, matrix)
            print(f"synthesised base {label} in {time.perf_counter() - start:.0f} s", flush=True)
        raw = work / f"raw{matrix}_{size}"
        start = time.perf_counter()
        written = clone_dataset(bases[matrix], raw, size)
        print(
            f"cloned {written} files ({label}) in {time.perf_counter() - start:.0f} s", flush=True
        )
        for n_jobs in args.n_jobs:
            for row in measure(raw, work / f"out{matrix}_{size}_{n_jobs}", n_jobs, args.skip_nifti):
                row["matrix"] = label
                results.append(row)
                print(row, flush=True)
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(work / f"out{matrix}_{size}_{args.n_jobs[0]}", ignore_errors=True)
    table = pd.DataFrame(results)
    table["files_per_s"] = table["files"] / table["seconds"]
    table["cpu_ms_per_file"] = 1000 * table["cpu_s"] / table["files"]
    columns = ["stage", "matrix", "files", "n_jobs", "seconds", "files_per_s", "cpu_s"]
    columns += ["cpu_ms_per_file", "peak_rss_mib"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{os.cpu_count()} CPU cores (load average {load}); wall time counts the neighbours\n")
    print(table[columns].to_markdown(index=False, floatfmt=".1f"))
    print(f"\nExtrapolated to {RSNA_FILES:,} files from the marginal CPU cost per file\n")
    print(extrapolate(table).to_markdown(index=False, floatfmt=".2f"))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def extrapolate(table: pd.DataFrame) -> pd.DataFrame:
    """Core-hours for the RSNA set from the slope of CPU seconds over files (fewest jobs).

    The slope between the smallest and largest set of a stage and matrix drops the fixed
    start-up cost (imports, the CSV); a set measured at one size only (512 x 512) takes
    the start-up cost of the same stage's other sets.
    """
    single = table[table["n_jobs"] == table["n_jobs"].min()]
    rows, startup = [], {}
    for (stage, matrix), group in single.groupby(["stage", "matrix"], sort=False):
        group = group.sort_values("files")
        if len(group) > 1:
            first, last = group.iloc[0], group.iloc[-1]
            per_file = (last["cpu_s"] - first["cpu_s"]) / (last["files"] - first["files"])
            startup[stage] = first["cpu_s"] - per_file * first["files"]
        else:
            only = group.iloc[-1]
            per_file = (only["cpu_s"] - startup.get(stage, 0.0)) / only["files"]
        hours = RSNA_FILES * per_file / 3600
        rows.append(
            {
                "stage": stage,
                "matrix": matrix,
                "marginal_cpu_ms_per_file": 1000 * per_file,
                "core_hours_752k": hours,
                "minutes_on_16_cores": 60 * hours / 16,
                "peak_rss_mib_largest": group["peak_rss_mib"].max(),
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
