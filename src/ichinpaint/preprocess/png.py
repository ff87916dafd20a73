"""Brain-window PNG export of HU volumes on the model grid, and the slice manifest's rows.

Slice k of a volume becomes <out>/png/<series_uid>/<image_id>.png (8-bit brain window,
padded/cropped to `canvas`, area-resized to `img_size`) and <image_id>_mask.png
(0/255, nearest). All slices are exported so that the neighbours above/below always
exist; the mid-range filter only marks slices `use = False` in the manifest, whose
format `ichinpaint.manifest` owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ichinpaint import names, volume
from ichinpaint import params as p
from ichinpaint.constants import LABELS
from ichinpaint.io import read_json
from ichinpaint.manifest import COLUMNS, DROP_MIDRANGE
from ichinpaint.niftidir import load_volume, series_uid_of
from ichinpaint.windowing import brain_window, midrange_fraction, to_model_grid


@dataclass(frozen=True)
class PngSettings:
    """The ``png`` params."""

    canvas: int = p.setting(
        256,
        "pad/crop square in native pixels before resizing (512 for RSNA)",
        rule=p.at_least(8),
    )
    img_size: int = p.setting(64, "model grid size in pixels (area resize)", rule=p.at_least(8))
    midrange_min_fraction: float = p.setting(
        0.05,
        "slices whose fraction of in-brain 0<HU<80 pixels (of the whole slice) is below "
        "this get use=False",
        rule=p.between(0, 1, high_open=True),  # 1 would drop every slice
    )
    n_jobs: int = p.setting(-1, "parallel series (-1 = all cores)", rule=p.N_JOBS)


def read_sidecar(volume_path: Path) -> dict[str, Any]:
    """The nifti stage's JSON sidecar of a volume (image IDs in slice order, patient, split)."""
    path = volume_path.with_name(f"{series_uid_of(volume_path)}.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sidecar of {volume_path.name} is missing")
    sidecar = read_json(path)
    missing = [key for key in ("image_ids", "patient_id", "split") if key not in sidecar]
    if missing:
        raise ValueError(f"{path}: sidecar lacks {missing}")
    return sidecar


def save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(path)


def export_series(
    volume_path: Path,
    *,
    masks_dir: Path,
    tmp_dir: Path,
    out_dir: Path,
    canvas: int,
    img_size: int,
    min_fraction: float,
) -> list[dict[str, Any]]:
    """Write the PNGs of one series into `tmp_dir` and return its manifest rows (paths under `out_dir`)."""
    uid = series_uid_of(volume_path)
    sidecar = read_sidecar(volume_path)
    hu = np.asarray(load_volume(volume_path).dataobj)
    mask_path = masks_dir / volume_path.name
    if not mask_path.is_file():
        raise FileNotFoundError(
            f"{mask_path}: brain mask of series {uid} is missing (run the mask stage)"
        )
    mask = np.asarray(load_volume(mask_path).dataobj) > 0
    ids = [
        names.check_name(i, f"image ID in {volume_path.name}'s sidecar")
        for i in sidecar["image_ids"]
    ]
    if hu.shape != mask.shape or len(ids) != hu.shape[2]:
        raise ValueError(
            f"{volume_path}: volume {hu.shape}, mask {mask.shape} and {len(ids)} sidecar image_ids do not match"
        )
    (tmp_dir / "png" / uid).mkdir(parents=True, exist_ok=True)
    paths = [(f"{out_dir}/png/{uid}/{i}.png", f"{out_dir}/png/{uid}/{i}_mask.png") for i in ids]
    rows = []
    n = len(ids)
    for k, image_id in enumerate(ids):
        image = volume.slice_image(hu, k)
        brain = volume.slice_image(mask, k)
        save_png(
            tmp_dir / "png" / uid / f"{image_id}.png",
            to_model_grid(brain_window(image), canvas, img_size),
        )
        grid_mask = to_model_grid(brain.astype(np.uint8), canvas, img_size, mode="nearest")
        save_png(tmp_dir / "png" / uid / f"{image_id}_mask.png", grid_mask * 255)
        fraction = midrange_fraction(image, brain)
        above, below = min(k + 1, n - 1), max(k - 1, 0)  # edge slices are their own neighbour
        rows.append(
            {
                "image_id": image_id,
                "series_uid": uid,
                "patient_id": sidecar["patient_id"],
                "split": sidecar["split"],
                "slice_index": k,
                "n_slices": n,
                "above_id": ids[above],
                "below_id": ids[below],
                "image_path": paths[k][0],
                "mask_path": paths[k][1],
                "above_path": paths[above][0],
                "below_path": paths[below][0],
                "midrange_fraction": round(fraction, 6),
                "use": fraction >= min_fraction,
                "drop_reason": "" if fraction >= min_fraction else DROP_MIDRANGE,
            }
        )
    return rows


def read_labels(slices_csv: str | Path) -> pd.DataFrame:
    """The six labels per image from the filter stage, indexed by image_id (one row each)."""
    table = pd.read_csv(slices_csv, dtype={"image_id": str})
    missing = [c for c in ("image_id", *LABELS) if c not in table.columns]
    if missing:
        raise ValueError(f"{slices_csv}: missing columns {missing}")
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{slices_csv}: image_id listed more than once, e.g. {duplicated.iloc[0]}")
    return table.set_index("image_id")


def attach_labels(
    rows: list[dict[str, Any]], labels: pd.DataFrame, slices_csv: str | Path
) -> pd.DataFrame:
    """Manifest rows with their labels; every exported image must have a label row."""
    manifest = pd.DataFrame(rows, columns=COLUMNS[: -len(LABELS)])
    unknown = manifest.loc[~manifest["image_id"].isin(labels.index), "image_id"]
    if len(unknown):
        raise ValueError(
            f"{slices_csv}: no row for {len(unknown)} exported images, e.g. {unknown.iloc[0]}"
        )
    for label in LABELS:
        manifest[label] = labels.loc[manifest["image_id"], label].to_numpy().astype(int)
    for column in ("patient_id", "split"):  # the sidecars must agree with the filter stage
        if column in labels.columns:
            theirs = labels.loc[manifest["image_id"], column].astype(str).to_numpy()
            differ = manifest["image_id"][manifest[column].astype(str).to_numpy() != theirs]
            if len(differ):
                raise ValueError(
                    f"{slices_csv}: {column} disagrees with the nifti sidecar for {len(differ)} "
                    f"images, e.g. {differ.iloc[0]}"
                )
    return manifest[list(COLUMNS)]


def count_per_split(manifest: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """Flat counts for `dvc metrics diff`: exported = used + dropped, overall and per split."""
    metrics: dict[str, Any] = {
        "series": int(manifest["series_uid"].nunique()),
        "slices_exported": len(manifest),
        "slices_used": int(manifest["use"].sum()),
        "slices_dropped": int((~manifest["use"]).sum()),
    }
    for split, group in manifest.groupby("split"):
        metrics[f"{split}_exported"] = len(group)
        metrics[f"{split}_used"] = int(group["use"].sum())
        metrics[f"{split}_dropped"] = int((~group["use"]).sum())
    if "status" in labels.columns:
        kept = labels.index[labels["status"] == "kept"]
        metrics["kept_images_not_exported"] = int((~kept.isin(manifest["image_id"])).sum())
    return metrics
