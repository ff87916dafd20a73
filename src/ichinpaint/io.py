"""Atomic writes, parallel loops with progress bars, and the metrics headline of a report.

Every stage writes through these helpers so that a killed stage never leaves a
half-written file that looks finished: content goes to a temporary name in the same
directory (``.<name>.<random>.tmp<suffix>``) and is renamed into place only once it is
complete. What a killed run leaves behind is cleaned up by the next write of the same
output (`remove_stale_temporaries`). Inside `staged_outputs()` the renames wait until the
whole block succeeded, so the outputs of one stage appear together, not old and new side
by side. Worker processes of `parallel_map` exit when their parent dies (a killed stage
leaves no workers holding memory or DVC's output pipe).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from joblib import Parallel, delayed
from joblib._parallel_backends import LokyBackend
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


# (temporary, target) pairs waiting for the end of a `staged_outputs` block, else None.
_STAGED: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar(
    "ichinpaint_staged_outputs", default=None
)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what killed runs left beside `path`: ``.<name>.*.tmp*`` and ``.<name>.old``.

    Temporaries still waiting in the current `staged_outputs` block are kept.
    """
    path = Path(path)
    if path.parent.name.endswith(".tmp") or not path.parent.is_dir():
        # Inside a fresh `atomic_dir` there is nothing stale, and listing a directory of
        # 20k sidecars for each of them would be quadratic.
        return []
    waiting = {tmp for tmp, _ in (_STAGED.get() or [])}
    stale = [
        p
        for p in path.parent.glob(f".{glob_escape(path.name)}.*")
        if (".tmp" in p.name[len(path.name) + 2 :] or p.name == f".{path.name}.old")
        and p not in waiting
    ]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _replace(tmp: Path, path: Path) -> None:
    """Move a finished temporary onto its target (a directory replaces the old one whole)."""
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _finish(tmp: Path, path: Path) -> None:
    staged = _STAGED.get()
    if staged is None:
        _replace(tmp, path)
    else:
        staged.append((tmp, path))


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_outputs() -> Iterator[None]:
    """Hold back the renames of `atomic_path`/`atomic_dir` until the block succeeds.

    Then all outputs are renamed into place one after the other (milliseconds), so a
    stage killed while computing leaves its previous outputs untouched and complete,
    never a mix of old and new. On an error the temporaries are removed. Only for
    writes in this process and thread (parallel workers rename as usual).
    """
    staged: list[tuple[Path, Path]] = []
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            _discard(tmp)
        raise
    finally:
        _STAGED.reset(token)
    for tmp, path in staged:
        _replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    The temporary name keeps the suffix of the target (``.nii.gz``, ``.png``) so
    libraries that pick a format from the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual umask-based mode.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        _finish(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces `path` whole if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        _finish(tmp, path)
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


_WATCHING_PARENT = False
PARENT_POLL_S = 0.5


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:  # re-parented: the stage process is gone
            os._exit(1)


def watch_parent(parent: int) -> None:
    """In a worker process: exit as soon as process `parent` is no longer its parent.

    joblib's loky workers otherwise outlive a killed stage for minutes, each holding
    its memory and DVC's output pipe. `parent` is passed in (not read here) because a
    worker may start up after the stage is already gone.
    """
    global _WATCHING_PARENT
    if os.getppid() != parent:
        os._exit(1)
    if _WATCHING_PARENT:
        return
    _WATCHING_PARENT = True
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


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
        # Each worker watches its parent from the moment it starts (loky initializer).
        backend = LokyBackend(initializer=watch_parent, initargs=(os.getpid(),))
        runner = Parallel(n_jobs=jobs, return_as="generator", backend=backend)
        for result in runner(delayed(fn)(item) for item in items):
            results.append(result)
            bar.update()
        return results
    finally:
        bar.close()
