"""Evaluate's decision applied to one series' anomaly map, and what a reader looks at.

The chain is evaluate's, with its frozen choices (`evaluation.decision.Decision`):
`postprocess_series` with the stored erosion, median, pixel threshold, component
size and 3-D check; the slice scores of the cleaned map inside the eroded brain; the
stored slice rule; the stored calibrator for probabilities. Nothing is fitted here.

Outputs of a series, in ``<out>/series/<series_uid>/``:

- ``anomaly.nii.gz``: the post-processed map (brain-window units, 1.0 = 80 HU)
  upsampled onto the series' own voxel grid and affine (the HU volume's);
- ``detections.nii.gz``: the detections on that grid, labelled by 3-D component;
- ``slices.csv``: one row per slice, probabilities and detections;
- ``overlays/<k>_<image_id>.png``: native-resolution brain window beside the same
  slice with the map and the detection outlines on it;
- ``summary.json``: flagged slices, the largest detection and its volume in mL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage

from ichinpaint import manifest as slices_manifest
from ichinpaint import volume
from ichinpaint.constants import LABELS
from ichinpaint.evaluation.decision import Decision
from ichinpaint.evaluation.normalize import Normalizer
from ichinpaint.evaluation.postprocess import erode_mask, load_detection, postprocess_series
from ichinpaint.io import write_csv, write_json
from ichinpaint.scores import COMPONENT_SCORE, SCORE_NAMES, component_score, slice_scores
from ichinpaint.windowing import brain_window, from_model_grid

SLICE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "slice_index",
    "use",
    "drop_reason",
    *SCORE_NAMES,
    "score",
    "detected_px",
    "n_components",
    "detected_area_mm2",
    "predicted",
    *(f"p_{label}" for label in LABELS),
)
OUTLINE_RGB = (0, 255, 255)


@dataclass(frozen=True)
class SeriesFindingsTask:
    """One scored series (picklable): its manifest rows and where its files lie."""

    series_uid: str
    rows: pd.DataFrame  # the png manifest rows of the series, sorted by slice_index
    detection: Path  # model-grid map (detect runner output)
    hu_volume: Path  # the series' HU NIfTI (native grid, its affine)
    out_dir: Path  # <out>/series/<series_uid>
    decision: Decision
    provenance: dict[str, Any]  # model and params hashes, copied into the summary
    max_overlays: int = 8


def apply_decision(
    anomaly: np.ndarray, masks: np.ndarray, decision: Decision
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cleaned map, labelled detections, eroded masks) of a ``[k, row, col]`` series."""
    pp = decision.postprocess
    if decision.normalizer:  # the same location normalisation evaluate chose thresholds on
        anomaly = Normalizer.from_json(decision.normalizer).apply(anomaly, masks)
    cleaned, labels = postprocess_series(
        anomaly,
        masks,
        erosion_px=int(pp["erosion_px"]),
        median_size=int(pp["median_size"]),
        threshold=float(decision.thresholds["pixel_threshold"]),
        min_component_px=int(pp["min_component_px"]),
        consistency=bool(pp["consistency_3d"]),
    )
    eroded = np.stack([erode_mask(m, int(pp["erosion_px"])) for m in masks])
    return cleaned, labels, eroded


def slice_table(
    rows: pd.DataFrame,
    cleaned: np.ndarray,
    labels: np.ndarray,
    eroded: np.ndarray,
    decision: Decision,
) -> pd.DataFrame:
    """Scores, detections, the slice decision and calibrated probabilities per slice."""
    records = []
    for row in rows.itertuples():
        k = int(row.slice_index)
        record = {
            "image_id": row.image_id,
            "series_uid": row.series_uid,
            "slice_index": k,
            "use": bool(row.use),
            "drop_reason": row.drop_reason if isinstance(row.drop_reason, str) else "",
        }
        record.update(slice_scores(cleaned[k], eroded[k]))
        record[COMPONENT_SCORE] = component_score(cleaned[k], labels[k], record["score_top1pct"])
        record["detected_px"] = int((labels[k] > 0).sum())
        record["n_components"] = int(len(np.unique(labels[k])) - 1)
        records.append(record)
    table = pd.DataFrame(records)
    table["score"] = table[decision.reduction].astype(float)
    rule = decision.slice_rule()
    table["predicted"] = rule.slice_positive(table["detected_px"], table["score"]) & table["use"]
    probs = decision.calibrator.probabilities(table[decision.calibrator.score].to_numpy())
    for j, label in enumerate(LABELS):
        table[f"p_{label}"] = probs[:, j]
    return table


def native_maps(
    cleaned: np.ndarray, labels: np.ndarray, canvas: int, native_shape: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per slice, the map (linear) and the detections (smooth outline) on the native matrix."""
    maps, detected = [], []
    for c, lab in zip(cleaned, labels, strict=True):
        maps.append(from_model_grid(c, canvas, native_shape, "linear").astype(np.float32))
        support = from_model_grid((lab > 0).astype(np.float32), canvas, native_shape, "linear")
        detected.append(support >= 0.5)
    return maps, detected


def largest_detection(
    components: np.ndarray, affine: np.ndarray, image_ids: list[str]
) -> dict[str, Any] | None:
    """The biggest 3-D detection: voxels, volume in mL (from the affine), slices, centre (RAS mm)."""
    n = int(components.max())
    if n == 0:
        return None
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    sizes[0] = 0
    biggest = int(np.argmax(sizes))
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    where = np.argwhere(components == biggest)
    centre = np.asarray(affine) @ np.append(where.mean(axis=0), 1.0)
    slices = sorted({int(k) for k in where[:, 2]})
    return {
        "voxels": int(sizes[biggest]),
        "volume_ml": float(sizes[biggest] * voxel_ml),
        "slice_indices": slices,
        "image_ids": [image_ids[k] for k in slices],
        "centre_ras_mm": [round(float(v), 2) for v in centre[:3]],
    }


def render_overlay(
    hu_slice: np.ndarray,
    native_map: np.ndarray,
    detected: np.ndarray,
    *,
    vmax: float,
    show_above: float,
    title: str,
) -> Image.Image:
    """Brain window | the same with the map (above `show_above`) and detection outlines.

    Drawn pixel for pixel at the CT's own matrix size, so nothing is resampled twice.
    """
    import matplotlib

    gray = brain_window(hu_slice).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    colours = matplotlib.colormaps["magma"](np.clip(native_map / vmax, 0, 1))[..., :3] * 255
    alpha = np.where(native_map > show_above, 0.6, 0.0)[..., None]
    over = rgb * (1 - alpha) + colours * alpha
    outline = detected & ~ndimage.binary_erosion(detected)
    outline = ndimage.binary_dilation(outline, iterations=max(1, hu_slice.shape[0] // 256 - 1))
    over[outline] = OUTLINE_RGB
    panel = np.concatenate([rgb, over], axis=1).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(panel, mode="RGB")
    ImageDraw.Draw(image).text((4, 2), title, fill=(255, 255, 0))
    return image


def on_grid(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI on the HU volume's grid, with its header conventions (sform exact, tilt kept)."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.header.set_sform(affine, code="scanner")
    image.header.set_qform(affine, code="scanner")
    return image


def overlay_slices(table: pd.DataFrame, max_overlays: int) -> pd.DataFrame:
    """The flagged slices by decreasing score, or the top-scoring used one when none is."""
    if max_overlays <= 0:
        return table.iloc[0:0]
    flagged = table[table["predicted"]].sort_values("score", ascending=False)
    if flagged.empty:
        flagged = table[table["use"]].sort_values("score", ascending=False).head(1)
    return flagged.head(max_overlays)


def series_findings(task: SeriesFindingsTask) -> dict[str, Any]:
    """Write one series' outputs (see the module docstring) and return its summary."""
    d = task.decision
    rows = task.rows.sort_values("slice_index").reset_index(drop=True)
    anomaly = load_detection(task.detection)
    masks = np.stack([slices_manifest.read_mask(Path(p)) for p in rows["mask_path"]])
    cleaned, labels, eroded = apply_decision(anomaly, masks, d)
    table = slice_table(rows, cleaned, labels, eroded, d)

    hu_image = nib.load(task.hu_volume)
    hu = np.asarray(hu_image.dataobj)
    native_shape = volume.slice_image(hu, 0).shape
    maps, detected = native_maps(cleaned, labels, d.canvas, native_shape)
    components, _ = ndimage.label(volume.stack_slices(detected), structure=np.ones((3, 3, 3)))
    pixel_mm2 = float(np.prod(np.linalg.norm(hu_image.affine[:3, :2], axis=0)))
    table["detected_area_mm2"] = [float(m.sum() * pixel_mm2) for m in detected]
    table = table[list(SLICE_COLUMNS)]

    task.out_dir.mkdir(parents=True, exist_ok=True)
    affine = hu_image.affine
    nib.save(
        on_grid(volume.stack_slices(maps).astype(np.float32), affine),
        task.out_dir / "anomaly.nii.gz",
    )
    nib.save(on_grid(components.astype(np.uint16), affine), task.out_dir / "detections.nii.gz")
    write_csv(task.out_dir / "slices.csv", table)

    threshold = float(d.thresholds["pixel_threshold"])
    overlays = []
    for row in overlay_slices(table, task.max_overlays).itertuples():
        k = int(row.slice_index)
        title = f"{row.image_id} k={k} p(any)={row.p_any:.2f}" + (
            " FLAGGED" if row.predicted else ""
        )
        image = render_overlay(
            volume.slice_image(hu, k),
            maps[k],
            detected[k],
            vmax=max(2 * threshold, 0.05),
            show_above=threshold / 2,
            title=title,
        )
        name = f"overlays/{k:03d}_{row.image_id}.png"
        (task.out_dir / "overlays").mkdir(exist_ok=True)
        image.save(task.out_dir / name)
        overlays.append(name)

    flagged = table[table["predicted"]]
    summary = {
        "series_uid": task.series_uid,
        "slices": len(table),
        "slices_used": int(table["use"].sum()),
        "flagged_slices": len(flagged),
        "flagged_image_ids": list(flagged["image_id"]),
        "series_positive": bool(len(flagged)),
        "p_any_max": float(table["p_any"].max()) if len(table) else 0.0,
        "detections_3d": int(components.max()),
        "largest_detection": largest_detection(components, hu_image.affine, list(rows["image_id"])),
        "native_shape": [int(v) for v in native_shape],
        "overlays": overlays,
        **task.provenance,
    }
    write_json(task.out_dir / "summary.json", summary)
    return {"summary": summary, "slices": table}
