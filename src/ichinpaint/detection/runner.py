"""Detection over whole series: orchestration of the parts (series stores) and the merge.

`run_part` computes the series of one part into a series store (one series at a time,
through `detection.series`), `merge_detections` builds the stage's outputs from the
stores (maps, scores.csv rows, overlays, metrics), and `run_detection` does both in one
process for callers that own their folder (predict, benchmarks). Inputs are read by
`detection.inputs`, geometry is `detection.geometry`, drawing `detection.overlays`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ichinpaint import volume
from ichinpaint.constants import LABELS
from ichinpaint.detection import shards
from ichinpaint.detection.geometry import series_affine, series_volume
from ichinpaint.detection.inputs import (
    SeriesImages,
    load_series_images,
    manifest_png_size,
    read_model_scale,
)
from ichinpaint.detection.overlays import OverlayPicker
from ichinpaint.detection.series import Detector, hu_fractions
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.model import scaled_sizes

# The same reductions evaluate uses, so scores.csv and evaluate agree by construction.
from ichinpaint.scores import SCORE_NAMES, slice_scores

SCORES_COLUMNS: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "patient_id",
    "split",
    "slice_index",
    *SCORE_NAMES,
    *LABELS,
)


@dataclasses.dataclass
class PartResult:
    """What one part did: series computed now, series found done, and its wall time."""

    computed: list[str]
    reused: list[str]
    seconds: float
    forwards: int
    device: str


def series_fingerprints(
    manifest: pd.DataFrame,
    uids: Sequence[str],
    run_fp: str,
    *,
    root: Path,
    nifti_dir: Path | None,
    canvas: int | None,
    img_size: int,
    reads_hu: bool = False,
) -> dict[str, str]:
    """The fingerprint of each series in `uids` (its inputs under this run's settings).

    With `reads_hu` (the HU baseline, the HU gate) the HU volume's bytes are an input too.
    """
    by_series = dict(list(manifest.groupby("series_uid", sort=True)))
    prints = {}
    for uid in uids:
        rows = by_series[uid]
        n_slices = int(rows["n_slices"].iloc[0])
        affine = series_affine(uid, nifti_dir, canvas, img_size, n_slices)
        series_run = run_fp
        if reads_hu and nifti_dir is not None:
            series_run += shards.file_digest(Path(nifti_dir) / f"{uid}.nii.gz")
        prints[uid] = shards.series_fingerprint(series_run, rows, root, affine)
    return prints


def series_score_rows(rows: pd.DataFrame, images: SeriesImages, maps: np.ndarray) -> pd.DataFrame:
    """The series' rows of scores.csv: one per used slice, in slice order."""
    out = []
    for pos, (_, meta) in enumerate(rows[rows["use"]].iterrows()):
        row = {key: meta[key] for key in ("image_id", "series_uid", "patient_id", "split")}
        row["slice_index"] = int(meta["slice_index"])
        row.update(slice_scores(maps[pos], images.brain[pos] > 0))
        row.update({label: int(meta[label]) for label in LABELS})
        out.append(row)
    return pd.DataFrame(out, columns=list(SCORES_COLUMNS))


def run_part(
    manifest: pd.DataFrame,
    module,
    settings: DetectSettings,
    *,
    store: shards.SeriesStore,
    fingerprints: dict[str, str],
    run_fp: str = "",
    numerics: str = "",
    root: Path = Path("."),
    nifti_dir: Path | None = None,
    part_label: str = "0/1",
    net=None,
) -> PartResult:
    """Detect every series of `fingerprints` not yet done in `store`; each lands there whole.

    `module` may be a callable returning the module, so that a part with nothing left
    to do never loads the model. A series counts as done when its record has the same
    fingerprint and the same `numerics` (device type, precision, ...): results of one
    run are never computed half one way, half another. `net` runs the UNet on another
    backend (see `UNetRunner`).
    """
    store.root.mkdir(parents=True, exist_ok=True)  # visible from the start of the run
    pending = [
        uid for uid in sorted(fingerprints) if not store.is_done(uid, fingerprints[uid], numerics)
    ]
    reused = [uid for uid in sorted(fingerprints) if uid not in set(pending)]
    if not pending:
        return PartResult([], reused, 0.0, 0, "")
    if settings.needs_hu and nifti_dir is None:
        raise ValueError(
            f"strategy {settings.strategy} / hu_gate {settings.hu_gate}: the HU volumes "
            "(nifti_dir) are needed"
        )
    if settings.needs_model and callable(module) and not isinstance(module, torch.nn.Module):
        module = module()
    detector = Detector.build(settings, module, net=net, manifest=manifest, root=root)
    by_series = dict(list(manifest.groupby("series_uid", sort=True)))
    start_all = time.perf_counter()
    for uid in tqdm(
        pending, desc=f"detect series (part {part_label})", unit="series", disable=None
    ):
        start = time.perf_counter()
        rows = by_series[uid]
        images = load_series_images(rows, root, detector.img_size)
        fractions = hu_fractions(settings, nifti_dir, uid, images.slice_index, detector.img_size)
        maps, forwards = detector.series_maps(uid, images, fractions)
        n_slices = int(rows["n_slices"].iloc[0])
        data = series_volume(maps, images.slice_index, n_slices)
        affine = series_affine(uid, nifti_dir, settings.canvas, detector.img_size, n_slices)
        record = {
            "series_uid": uid,
            "fingerprint": fingerprints[uid],
            "run_fingerprint": run_fp,
            "numerics": numerics,
            "seconds": time.perf_counter() - start,
            "forwards": forwards,
            "slices": len(images.slice_index),
            "slices_empty_brain": int((images.brain.sum(axis=(1, 2)) == 0).sum()),
            "device": detector.device_name,
            "part": part_label,
        }
        scores = series_score_rows(rows, images, maps)
        store.write(uid, nib.Nifti1Image(data, affine), scores, record)
    seconds = time.perf_counter() - start_all
    return PartResult(pending, reused, seconds, detector.forwards, detector.device_name)


# -- the merge: the stage's outputs from the stores ------------------------------------


@dataclasses.dataclass
class RunResult:
    scores: pd.DataFrame
    metrics: dict[str, Any]


SCORES_DTYPES = {"image_id": str, "series_uid": str, "patient_id": str, "split": str}


def merge_detections(
    manifest: pd.DataFrame,
    located: dict[str, shards.Located],
    settings: DetectSettings,
    *,
    out_dir: Path,
    root: Path = Path("."),
    n_overlays: int = 8,
) -> RunResult:
    """Maps into `out_dir`, overlays, and the scores table and metrics, from the stores.

    The caller writes ``scores.csv`` and the metrics (it owns the atomic directory).
    """
    picker = OverlayPicker(n_overlays // 2)
    frames = []
    for uid in sorted(located):
        store = located[uid].store
        shards.link_or_copy(store.map_path(uid), out_dir / f"{uid}.nii.gz")
        frame = pd.read_csv(store.scores_path(uid), dtype=SCORES_DTYPES)
        if list(frame.columns) != list(SCORES_COLUMNS) or set(frame["series_uid"]) - {uid}:
            raise shards.MergeError(f"{store.scores_path(uid)}: not the score rows of series {uid}")
        frames.append(frame)
    scores = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORES_COLUMNS)
    )
    duplicated = scores["image_id"][scores["image_id"].duplicated()]
    if len(duplicated):
        raise shards.MergeError(f"image IDs scored twice: {list(duplicated[:5])}")
    for row in scores.to_dict("records"):
        picker.offer(row)
    paths = manifest.set_index("image_id")["image_path"]
    img_size = (
        nib.load(out_dir / f"{scores['series_uid'].iloc[0]}.nii.gz").shape[0] if len(scores) else 0
    )

    def load(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        ct = read_model_scale(root / paths[row["image_id"]], img_size)
        volume_data = np.asarray(nib.load(out_dir / f"{row['series_uid']}.nii.gz").dataobj)
        return ct, volume.slice_image(volume_data, int(row["slice_index"]))

    picker.write(out_dir / "overlays", load)
    records = [located[uid].record for uid in sorted(located)]
    seconds = [float(r["seconds"]) for r in records]
    forwards = sum(int(r["forwards"]) for r in records)
    seconds_total = float(sum(seconds))
    n_used = len(scores)
    metrics = {
        "strategy": settings.strategy,
        "strategy_detail": settings.sampling().describe(),
        "sign": settings.sign,
        "hu_gate": settings.hu_gate,
        "forwards_total": forwards,
        "forwards_per_slice": forwards / n_used if n_used else 0.0,
        "forwards_per_second": forwards / seconds_total if seconds_total > 0 else 0.0,
        "seconds_per_series": float(np.mean(seconds)) if seconds else 0.0,
        "seconds_total": seconds_total,
        "series": len(records),
        "slices": n_used,
        "slices_not_used": int((~manifest["use"]).sum()),
        "slices_empty_brain": sum(int(r["slices_empty_brain"]) for r in records),
        "device": ", ".join(sorted({r["device"] for r in records})),
        "img_size": img_size,
        "sizes_px": ",".join(str(s) for s in scaled_sizes(settings.sizes, img_size))
        if img_size
        else "",
        "parts": len({r["part"] for r in records}),
    }
    return RunResult(scores=scores, metrics=metrics)


def run_detection(
    manifest: pd.DataFrame,
    module,
    settings: DetectSettings,
    *,
    out_dir: Path,
    root: Path = Path("."),
    nifti_dir: Path | None = None,
    n_overlays: int = 0,
    net=None,
) -> RunResult:
    """Every series of `manifest` in this process, maps and overlays into `out_dir`.

    The library entry for callers that own their folder (predict, benchmarks): the same
    per-series computation and merge as the detect stage, through a throw-away store.
    """
    import shutil

    out_dir = Path(out_dir)
    store = shards.SeriesStore(out_dir / ".series")
    if settings.needs_model:
        img_size = int(module.config.model.input_size)
    else:
        img_size = manifest_png_size(manifest, Path(root))
    run_fp = shards.run_fingerprint(settings.fingerprint_params(), [])
    uids = sorted(manifest["series_uid"].unique())
    prints = series_fingerprints(
        manifest, uids, run_fp, root=Path(root), nifti_dir=nifti_dir, canvas=settings.canvas,
        img_size=img_size, reads_hu=settings.needs_hu,
    )  # fmt: skip
    run_part(
        manifest, module, settings, store=store, fingerprints=prints, run_fp=run_fp,
        root=Path(root), nifti_dir=nifti_dir, net=net,
    )  # fmt: skip
    located = shards.locate_series([store], prints)
    result = merge_detections(
        manifest, located, settings, out_dir=out_dir, root=Path(root), n_overlays=n_overlays
    )
    shutil.rmtree(store.root)
    return result
