"""Atomic writes, parallel loops with progress bars, and the metrics headline of a report.

Every stage writes through these helpers so that a killed stage never leaves a
half-written file that looks finished: content goes to a temporary name in the same
directory and is renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    The temporary name keeps the suffix of the target (``.nii.gz``, ``.png``) so
    libraries that pick a format from the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces `path` whole if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_headline(
    report: str | os.PathLike, out: str | os.PathLike, keys: Mapping[str, str]
) -> dict[str, Any]:
    """Write the headline of a stage's report JSON to `out`; return it.

    `keys` maps headline names to report keys (a key the report lacks is left out,
    e.g. Dice without ground truth). The report is the stage's whole account (an
    ordinary DVC output); the headline is what `dvc metrics show` and `dvc metrics
    diff` print, so it stays a handful of values. Stages share headline names
    (``images``, ``excluded``, ``dice``) so that the metrics table stays narrow.
    """
    values = read_json(report)
    headline = {name: values[key] for name, key in keys.items() if key in values}
    write_json(out, headline)
    return headline


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a table without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in metrics; make them plain JSON.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def resolve_n_jobs(n_jobs: int) -> int:
    """-1 means all cores; 0 is refused; other values are taken as they are."""
    if n_jobs == 0:
        raise ValueError("n_jobs must be -1 (all cores) or a positive number, not 0")
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    *,
    n_jobs: int = 1,
    desc: str = "",
    unit: str = "it",
) -> list[R]:
    """Apply `fn` to every item, in processes when n_jobs != 1, with a progress bar.

    Results come back in input order. With one job the loop stays in this process,
    which keeps tracebacks simple and avoids process start-up for tiny inputs.
    """
    items = list(items)
    jobs = min(resolve_n_jobs(n_jobs), max(len(items), 1))
    bar = tqdm(total=len(items), desc=desc, unit=unit, mininterval=1.0)
    try:
        if jobs == 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        results = []
        runner = Parallel(n_jobs=jobs, return_as="generator")
        for result in runner(delayed(fn)(item) for item in items):
            results.append(result)
            bar.update()
        return results
    finally:
        bar.close()
