"""Write a whole synthetic dataset in the RSNA layout, with its ground truth.

Layout (docs/architecture.md, "Raw"):
``stage_2_train/ID_<hex>.dcm``, ``stage_2_train.csv``, ``ground_truth/<series>/``
(``lesion.nii.gz``, ``brain.nii.gz``, ``mimic.nii.gz``, ``ids.json``), ``ground_truth/series.csv``,
``ground_truth/quirks.csv`` and ``contact_sheet.png``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ichinpaint import io, volume
from ichinpaint.constants import LABELS, MIMIC_KINDS, SUBTYPE_CODES, SUBTYPES

from . import anatomy, contact_sheet, dicom, render
from .plan import QUIRKS, DatasetPlan, SeriesPlan, plan_dataset


@dataclass
class SeriesResult:
    """What the parent needs back from a worker: labels, ground-truth summary, sheet panels."""

    plan: SeriesPlan
    labels: dict[str, list[int]]  # image_id -> six labels (LABELS order)
    n_ground_truth: int
    subtypes: list[str]
    mimics: list[str]  # mimic kinds labelled somewhere in the ground truth
    panels: list[contact_sheet.Panel]


def write_dataset(
    out_dir: str | os.PathLike,
    n_patients: int = 4,
    n_slices: int = 6,
    matrix: int = 128,
    hemorrhage_fraction: float = 0.5,
    seed: int = 0,
    *,
    quirks: bool | None = None,
    n_jobs: int = 1,
    sheet: bool = True,
    min_slices: int | None = None,
) -> dict[str, int]:
    """Write the dataset into `out_dir` (created; existing files are overwritten).

    The defaults make a tiny set in a few seconds for other stages' tests. Quirks are
    present when n_patients >= 4, or when `quirks` is True (False: none). Returns
    counts: patients, images (files), csv_rows, hemorrhage_series, and per quirk.
    """
    out = Path(out_dir)
    plan = plan_dataset(
        n_patients, n_slices, matrix, hemorrhage_fraction, seed, quirks, min_slices=min_slices
    )
    (out / "stage_2_train").mkdir(parents=True, exist_ok=True)
    anatomy.load_template()  # fail early (in this process) if the templates are missing
    results = io.parallel_map(
        _SeriesWriter(out), plan.series, n_jobs=n_jobs, desc="synthesize", unit="series"
    )
    csv_rows = _write_label_csv(out / "stage_2_train.csv", results, plan, seed)
    _write_series_table(out / "ground_truth" / "series.csv", results)
    quirk_table = _quirk_table(results, plan)
    io.write_csv(out / "ground_truth" / "quirks.csv", quirk_table)
    if sheet:
        contact_sheet.write(out / "contact_sheet.png", [p for r in results for p in r.panels])
    counts = {
        "patients": len(results),
        "images": sum(r.plan.n_slices for r in results),
        "csv_rows": csv_rows,
        "hemorrhage_series": sum(bool(r.subtypes) for r in results),
    }
    for quirk in QUIRKS:
        counts[f"quirk_{quirk}"] = int((quirk_table["quirk"] == quirk).sum())
    return counts


def render_plan(plan: SeriesPlan, healthy_twin: bool = False) -> render.RenderedSeries:
    """The series a plan describes; deterministic, so tests can recompute the intended HU.

    `healthy_twin`: the same series without its bleeds and without noise (render_series).
    """
    return render.render_series(
        anatomy.load_template(),
        np.random.default_rng(plan.seed),
        plan.n_slices,
        plan.rows,
        plan.cols,
        plan.lesion_kinds,
        tilt_deg=plan.tilt_deg,
        mimic_kinds=plan.mimic_kinds,
        healthy_twin=healthy_twin,
    )


def outside_fov(plan: SeriesPlan) -> np.ndarray | None:
    """Pixels a scanner pads outside its reconstruction circle (None when it does not)."""
    return _outside_fov(plan.rows, plan.cols) if plan.fov_padding else None


class _SeriesWriter:
    """Picklable per-series job: render, write the DICOM files and the ground truth."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __call__(self, plan: SeriesPlan) -> SeriesResult:
        series = render_plan(plan)
        _write_dicoms(self.out / "stage_2_train", plan, series)
        kept = [k for k in range(plan.n_slices) if k != plan.truncated_k]
        _write_ground_truth(self.out / "ground_truth" / plan.series_uid, plan, series, kept)
        labels = {plan.image_ids[k]: _slice_labels(series.lesion[k]) for k in range(plan.n_slices)}
        present = sorted(
            {s for k in kept for s in SUBTYPES if labels[plan.image_ids[k]][SUBTYPES.index(s)]},
            key=SUBTYPES.index,
        )
        codes = np.unique(series.mimic[kept]) if kept else np.zeros(0, int)
        mimics = [MIMIC_KINDS[c - 1] for c in codes if c > 0]
        return SeriesResult(
            plan, labels, len(kept), present, mimics, contact_sheet.pick_panels(plan, series, kept)
        )


def _slice_labels(codes: np.ndarray) -> list[int]:
    """The six RSNA labels of a slice, straight from its lesion mask (any = OR of the five)."""
    present = [int(bool((codes == SUBTYPE_CODES[s]).any())) for s in SUBTYPES]
    return present + [int(any(present))]


def _write_dicoms(folder: Path, plan: SeriesPlan, series: render.RenderedSeries) -> None:
    geom = series.geometry
    outside = outside_fov(plan)
    for k, image_id in enumerate(plan.image_ids):
        stored, intercept = dicom.encode_hu(series.hu[k], plan.encoding, outside)
        header = dicom.SliceHeader(
            image_id=image_id,
            patient_id=plan.patient_id,
            study_uid=plan.study_uid,
            series_uid=plan.series_uid,
            ipp=tuple(float(v) for v in geom.ipps[k]),
            iop=geom.iop,
            pixel_spacing=geom.pixel_spacing,
            window_center=plan.window[0],
            window_width=plan.window[1],
            encoding=plan.encoding,
            multivalue_window=plan.multivalue_window,
        )
        path = folder / f"{image_id}.dcm"
        with io.atomic_path(path) as tmp:
            dicom.write_slice(tmp, header, stored, intercept)
            if k == plan.truncated_k:
                dicom.truncate_pixel_data(tmp, stored.nbytes)


def _outside_fov(rows: int, cols: int) -> np.ndarray:
    """Pixels outside the reconstruction circle (diameter = the shorter side)."""
    r, c = np.ogrid[:rows, :cols]
    radius = min(rows, cols) / 2
    return (r - (rows - 1) / 2) ** 2 + (c - (cols - 1) / 2) ** 2 > radius**2


def _write_ground_truth(
    folder: Path, plan: SeriesPlan, series: render.RenderedSeries, kept: list[int]
) -> None:
    """Lesion and brain masks on the grid the nifti stage builds from the readable slices."""
    geom = series.geometry
    ipps = geom.ipps[kept]
    affine = volume.affine_ras(ipps[0], geom.iop, geom.pixel_spacing, volume.mean_slice_step(ipps))
    for name, data in (("lesion", series.lesion), ("brain", series.brain), ("mimic", series.mimic)):
        img = nib.Nifti1Image(volume.stack_slices([data[k] for k in kept]).astype(np.uint8), affine)
        img.header.set_xyzt_units("mm")
        with io.atomic_path(folder / f"{name}.nii.gz") as tmp:
            nib.save(img, tmp)
    io.write_json(folder / "ids.json", {"image_ids": [plan.image_ids[k] for k in kept]})


def _write_label_csv(path: Path, results: list[SeriesResult], plan: DatasetPlan, seed: int) -> int:
    """stage_2_train.csv: images sorted by ID, six rows each; duplicates inserted as whole blocks."""
    labels = {i: v for r in results for i, v in r.labels.items()}
    blocks = [
        [(f"{i}_{name}", v) for name, v in zip(LABELS, labels[i], strict=True)]
        for i in sorted(labels)
    ]
    rng = np.random.default_rng([seed, 2])
    for image_id in plan.duplicated_ids:
        at = int(rng.integers(0, len(blocks) + 1))
        blocks.insert(
            at,
            [(f"{image_id}_{name}", v) for name, v in zip(LABELS, labels[image_id], strict=True)],
        )
    rows = [row for block in blocks for row in block]
    io.write_csv(path, pd.DataFrame(rows, columns=["ID", "Label"]))
    return len(rows)


def _write_series_table(path: Path, results: list[SeriesResult]) -> None:
    rows = [
        {
            "series_uid": r.plan.series_uid,
            "patient_id": r.plan.patient_id,
            "n_slices": r.n_ground_truth,
            "has_hemorrhage": int(bool(r.subtypes)),
            "quirks": ";".join(r.plan.quirks),
            "subtypes": ";".join(r.subtypes),
            "n_files": r.plan.n_slices,
            "study_uid": r.plan.study_uid,
            "age": r.plan.age,
            "mimics": ";".join(r.mimics),
        }
        for r in results
    ]
    io.write_csv(path, pd.DataFrame(rows))


def _quirk_table(results: list[SeriesResult], plan: DatasetPlan) -> pd.DataFrame:
    """One row per (image, quirk): what a correct reader is expected to do with it."""
    rows = []
    for r in results:
        p = r.plan
        for quirk in p.quirks:
            ids = [p.image_ids[p.truncated_k]] if quirk == "truncated_pixel_data" else p.image_ids
            rows += [(i, p.series_uid, quirk, _expected(quirk, p)) for i in ids]
    owner = {i: r.plan.series_uid for r in results for i in r.plan.image_ids}
    for image_id in plan.duplicated_ids:
        rows.append((image_id, owner[image_id], "duplicate_csv_rows", QUIRKS["duplicate_csv_rows"]))
    return pd.DataFrame(rows, columns=["image_id", "series_uid", "quirk", "expected"])


def _expected(quirk: str, plan: SeriesPlan) -> str:
    if quirk == "non_default_matrix":
        return f"{QUIRKS[quirk]}: {plan.rows} x {plan.cols}"
    if quirk == "gantry_tilt":
        return f"{QUIRKS[quirk]}: {plan.tilt_deg:g} degrees"
    return QUIRKS[quirk]
