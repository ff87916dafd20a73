"""Detection sharded by series, resumable, and merged: the orchestration around the runner.

The unit of work is one series. Its results are written to a *series store* (a plain
directory, ``data/detections.parts`` for the DVC stage) as three files, each written
atomically, the record last:

- ``<uid>.nii.gz``: the anomaly map volume (the detect stage's contract);
- ``<uid>.csv``: its rows of ``scores.csv``;
- ``<uid>.json``: the record (fingerprint, seconds, UNet forwards, device). A series
  is done when its record exists and its fingerprint matches.

The fingerprint hashes everything that defines a series' result: the detection
settings, the model's weights and spec, the png canvas, and the series' own inputs
(its manifest rows, the bytes of its PNGs, the source volume's affine). The record
also keeps the *numerics* (device type, bf16, channels_last, compile, attention): the
same result up to rounding. A re-run skips a series only when both match, and the
merge refuses a mix of numerics, while a merge-only job needs no GPU (it computes
nothing, so its own device does not matter).

Sharding follows nnU-Net's predictor: part ``i`` of ``K`` takes every K-th series of
the sorted series list (``--num_parts K --part_id i``), one process per GPU, a SLURM
array, or several nodes sharing the store; under ``torchrun`` the rank and world size
pick the part. Each series' noise is seeded from the series UID alone, so a series'
map is bit-identical whichever part, process or order computes it.

The merge builds the stage's outputs (``scores.csv``, the maps, overlays, metrics) from
one or more stores (several when nodes wrote separate folders) and refuses when a series
is missing, recorded twice, or recorded with another fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ichinpaint.io import atomic_path, write_csv, write_json

STORE_VERSION = 1
RECORD_KEYS: tuple[str, ...] = (
    "series_uid",
    "fingerprint",
    "run_fingerprint",
    "numerics",
    "seconds",
    "forwards",
    "slices",
    "slices_empty_brain",
    "device",
    "part",
)


# -- which series a part takes -----------------------------------------------------------


def select_part(series_uids: Iterable[str], num_parts: int, part_id: int) -> list[str]:
    """Part `part_id` of `num_parts`: every `num_parts`-th series of the sorted list (nnU-Net)."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be in 0..{num_parts - 1}, got {part_id}")
    return sorted(set(series_uids))[part_id::num_parts]


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """The part a process runs: from ``--num_parts/--part_id``, or from torchrun's variables."""

    num_parts: int
    part_id: int
    local_rank: int = 0
    torchrun: bool = False

    @property
    def label(self) -> str:
        return f"{self.part_id}/{self.num_parts}"


def resolve_part(
    num_parts: int, part_id: int, environ: dict[str, str] | None = None
) -> DistributedEnv:
    """Explicit parts win; otherwise torchrun's ``WORLD_SIZE``/``RANK`` (one part per rank)."""
    environ = dict(os.environ if environ is None else environ)
    world = int(environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if num_parts != 1 or part_id != 0:
            raise ValueError(
                "--num_parts/--part_id and torchrun both split the work: use one of them "
                f"(WORLD_SIZE={world}, --num_parts {num_parts} --part_id {part_id})"
            )
        return DistributedEnv(
            num_parts=world,
            part_id=int(environ["RANK"]),
            local_rank=int(environ.get("LOCAL_RANK", "0")),
            torchrun=True,
        )
    select_part([], num_parts, part_id)  # validates
    return DistributedEnv(num_parts=num_parts, part_id=part_id)


# -- fingerprints ------------------------------------------------------------------------


def file_digest(path: Path, hasher: Any | None = None) -> str:
    """sha256 of a file's bytes, read in blocks (checkpoints are hundreds of MB)."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def run_fingerprint(params: dict[str, Any], model_files: Sequence[Path]) -> str:
    """Hash of the run's settings (JSON-able) and the model files' bytes."""
    hasher = hashlib.sha256()
    hasher.update(
        json.dumps({"store": STORE_VERSION, **params}, sort_keys=True, default=str).encode()
    )
    for path in model_files:
        hasher.update(file_digest(Path(path)).encode())
    return hasher.hexdigest()


def series_fingerprint(
    run_fp: str, rows: pd.DataFrame, root: Path, source_affine: Any | None = None
) -> str:
    """Hash of the run fingerprint and one series' inputs: its rows, PNG bytes and affine.

    Every slice's image and mask PNG is hashed (the neighbours of a used slice are other
    slices of the same series), so a re-exported series is recomputed.
    """
    hasher = hashlib.sha256(run_fp.encode())
    hasher.update(rows.to_csv(index=False).encode())
    for column in ("image_path", "mask_path"):
        for rel in rows[column]:
            path = root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{path}: PNG listed in slices.csv is missing")
            hasher.update(file_digest(path).encode())
    if source_affine is not None:
        hasher.update(repr([round(float(v), 9) for v in list(source_affine.ravel())]).encode())
    return hasher.hexdigest()


# -- the store ---------------------------------------------------------------------------


class SeriesStore:
    """A directory of finished series: ``<uid>.nii.gz``, ``<uid>.csv``, ``<uid>.json``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def map_path(self, uid: str) -> Path:
        return self.root / f"{uid}.nii.gz"

    def scores_path(self, uid: str) -> Path:
        return self.root / f"{uid}.csv"

    def record_path(self, uid: str) -> Path:
        return self.root / f"{uid}.json"

    def record(self, uid: str) -> dict[str, Any] | None:
        """The series' record, or None when it has none (or a half-complete set of files)."""
        path = self.record_path(uid)
        if not path.is_file():
            return None
        if not (self.map_path(uid).is_file() and self.scores_path(uid).is_file()):
            return None
        return json.loads(path.read_text())

    def is_done(self, uid: str, fingerprint: str, numerics: str = "") -> bool:
        record = self.record(uid)
        return (
            record is not None
            and record.get("fingerprint") == fingerprint
            and record.get("numerics", "") == numerics
        )

    def write(self, uid: str, volume, scores: pd.DataFrame, record: dict[str, Any]) -> None:
        """Map, then scores, then the record: a series counts as done only once all exist."""
        import nibabel as nib

        self.root.mkdir(parents=True, exist_ok=True)
        self.record_path(uid).unlink(missing_ok=True)  # a stale record never outlives new files
        with atomic_path(self.map_path(uid)) as tmp:
            nib.save(volume, tmp)
        write_csv(self.scores_path(uid), scores)
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"series record of {uid} lacks {missing}")
        write_json(self.record_path(uid), record)

    def clean_temporaries(self, uids: Iterable[str] | None = None) -> list[Path]:
        """Remove the atomic writers' leftovers (``.<name>.*.tmp*``) of a killed run.

        With `uids`, only those series' leftovers: a part must not delete the files
        another part, running at the same time, is writing.
        """
        if not self.root.is_dir():
            return []
        if uids is None:
            leftovers = list(self.root.glob(".*.tmp*"))
        else:
            leftovers = [p for uid in uids for p in self.root.glob(f".{uid}.*.tmp*")]
        for path in leftovers:
            _remove(path)
        return leftovers


def clean_stale_outputs(out_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left beside `out_dir`: ``.<name>.*.tmp`` dirs and ``.<name>.old``.

    These are ``io.atomic_dir``'s temporaries; only the stage that owns `out_dir` (the
    merge) calls this, never a part, so no running writer is disturbed.
    """
    out = Path(out_dir)
    if not out.parent.is_dir():
        return []
    stale = list(out.parent.glob(f".{out.name}.*.tmp")) + list(out.parent.glob(f".{out.name}.old"))
    for path in stale:
        _remove(path)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- the merge ---------------------------------------------------------------------------


class MergeError(RuntimeError):
    """Parts that do not add up to the run: missing, duplicated or stale series."""


@dataclasses.dataclass
class Located:
    """Where a series' finished result lives, and its record."""

    store: SeriesStore
    record: dict[str, Any]


def locate_series(stores: Sequence[SeriesStore], expected: dict[str, str]) -> dict[str, Located]:
    """Find each expected series (uid -> fingerprint) in exactly one store, or refuse.

    A series with no record is missing; one recorded in two stores is duplicated; one
    whose fingerprint differs was computed with other settings, model or inputs. The
    error lists every such series so one look tells what to re-run.
    """
    found: dict[str, list[Located]] = {uid: [] for uid in expected}
    for store in stores:
        for uid in expected:
            record = store.record(uid)
            if record is not None:
                found[uid].append(Located(store, record))
    missing = [uid for uid, hits in found.items() if not hits]
    duplicated = {
        uid: [str(h.store.root) for h in hits] for uid, hits in found.items() if len(hits) > 1
    }
    stale = [
        uid
        for uid, hits in found.items()
        if len(hits) == 1 and hits[0].record.get("fingerprint") != expected[uid]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} series missing (run their parts first): {_some(missing)}")
    if duplicated:
        listed = "; ".join(
            f"{uid} in {', '.join(where)}" for uid, where in list(duplicated.items())[:5]
        )
        problems.append(f"{len(duplicated)} series recorded in several stores: {listed}")
    if stale:
        problems.append(
            f"{len(stale)} series computed with other settings, model or inputs "
            f"(re-run their parts): {_some(stale)}"
        )
    kinds = sorted({hits[0].record.get("numerics", "") for hits in found.values() if hits})
    if len(kinds) > 1:
        problems.append(f"series computed with different numerics (re-run one kind): {kinds}")
    if problems:
        roots = ", ".join(str(s.root) for s in stores)
        raise MergeError(f"cannot merge detections from {roots}: " + "; ".join(problems))
    return {uid: hits[0] for uid, hits in found.items()}


def _some(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" ... (+{len(items) - n})" if len(items) > n else "")


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (no second copy of big maps), or copy across devices."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
