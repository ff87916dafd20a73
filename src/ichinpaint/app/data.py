"""What the review app computes, without Streamlit: outputs present, series, thresholds, counts.

Every number on the page must be the number the evaluate stage would produce with
the same settings, so this module only assembles ``ichinpaint.evaluation`` pieces
(`healthy_validation`, `choose_thresholds`, `evaluate_series`, which also hands back
the post-processed slices and the ground truth it measured); it never re-implements a
post-processing step and reads each input once. Nothing here runs the
model: the anomaly maps are the detect stage's NIfTI volumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ichinpaint import manifest, names
from ichinpaint import params as p
from ichinpaint.evaluation.normalize import Normalizer
from ichinpaint.evaluation.pipeline import Paths, healthy_validation, thresholds_for
from ichinpaint.evaluation.series import (
    SeriesTask,
    decide_slices,
    evaluate_series,
    read_manifest,
)
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import (
    MODES,
    HealthyValidation,
    Thresholds,
)
from ichinpaint.io import read_json

# The page's threshold modes: evaluate's, and "value" (see `Choice`).
THRESHOLD_MODES: tuple[str, ...] = (*MODES, "value")
# The params.yaml `evaluate` keys the app controls (and "Save as params" writes).
EVALUATE_KEYS: tuple[str, ...] = (
    "threshold_mode",
    "percentile",
    "target_fpr",
    "erosion_px",
    "median_size",
    "min_component_px",
    "consistency_3d",
    "reduction",
    "normalize",
)


@dataclass(frozen=True)
class AppPaths:
    """Where the pipeline's outputs are; relative paths are taken from `root`."""

    root: Path
    slices: Path
    detections: Path
    metrics: Path
    ground_truth: Path
    params: Path

    @classmethod
    def under(
        cls,
        root: str | Path,
        *,
        slices: str | Path = "data/processed/slices.csv",
        detections: str | Path = "data/detections",
        metrics: str | Path = "metrics/reports/detection.json",
        ground_truth: str | Path = "data/raw/synthetic/ground_truth",
        params: str | Path = "params.yaml",
    ) -> AppPaths:
        root = Path(root)

        def at(p: str | Path) -> Path:
            return Path(p) if Path(p).is_absolute() else root / p

        return cls(root, at(slices), at(detections), at(metrics), at(ground_truth), at(params))

    def detection(self, series_uid: str) -> Path:
        return self.detections / f"{names.check_series_uid(series_uid)}.nii.gz"

    def pipeline_paths(self) -> Paths:
        """The evaluate pipeline's `Paths`; the app only reads, so outputs point nowhere useful."""
        unused = self.root / ".review-app-unused"
        return Paths(
            slices=self.slices,
            detections=self.detections,
            detect_metrics=unused,
            ground_truth=self.ground_truth,
            metrics=unused,
            plots=unused,
            gallery=unused,
            submission=unused,
            root=self.root,
        )


@dataclass(frozen=True)
class Problem:
    """A missing or unusable output, with what to run; `fatal` stops the page."""

    message: str
    fatal: bool


def check_outputs(paths: AppPaths) -> list[Problem]:
    """What is missing, phrased as the `dvc repro` to run, most upstream first."""
    problems = []
    if not paths.params.exists():
        problems.append(
            Problem(f"`{paths.params}` not found: start the app in the repository.", True)
        )
    if not paths.slices.exists():
        problems.append(
            Problem(f"`{paths.slices}` not found: run `dvc repro png` (slice manifest).", True)
        )
    if not paths.detections.is_dir() or not any(paths.detections.glob("*.nii.gz")):
        problems.append(
            Problem(
                f"No anomaly maps in `{paths.detections}`: run `dvc repro detect`.",
                True,
            )
        )
    if not paths.metrics.exists():
        problems.append(
            Problem(
                f"`{paths.metrics}` not found: run `dvc repro evaluate` to compare with the "
                "thresholds the pipeline chose (the page works without it).",
                False,
            )
        )
    return problems


def load_manifest(paths: AppPaths) -> pd.DataFrame:
    """The png stage's slices.csv, read and checked the way evaluate reads it."""
    return read_manifest(paths.slices)


def read_detection_metrics(paths: AppPaths) -> dict[str, Any] | None:
    """metrics/reports/detection.json (the thresholds evaluate chose), or None before evaluate ran."""
    return read_json(paths.metrics) if paths.metrics.exists() else None


def series_overview(
    manifest: pd.DataFrame, paths: AppPaths, splits: tuple[str, ...]
) -> pd.DataFrame:
    """One row per series of `splits`: split, patient, slices, bleed slices, has_detection.

    Sorted test first, then series with bleeds first, so the interesting ones lead.
    """
    chosen = manifest[manifest["split"].isin(splits)]
    if chosen.empty:
        return pd.DataFrame(
            columns=[
                "series_uid",
                "split",
                "patient_id",
                "n_slices",
                "bleed_slices",
                "has_detection",
            ]
        )
    table = (
        chosen.groupby("series_uid", sort=True)
        .agg(
            split=("split", "first"),
            patient_id=("patient_id", "first"),
            n_slices=("image_id", "size"),
            bleed_slices=("any", "sum"),
        )
        .reset_index()
    )
    table["has_detection"] = [paths.detection(uid).exists() for uid in table["series_uid"]]
    order = {s: i for i, s in enumerate(splits)}
    table["_split_order"] = table["split"].map(order)
    table = table.sort_values(
        ["_split_order", "bleed_slices", "series_uid"], ascending=[True, False, True]
    )
    return table.drop(columns="_split_order").reset_index(drop=True)


@dataclass(frozen=True)
class Choice:
    """What the page sets: evaluate's own `Settings`, plus the typed-threshold control.

    With `typed_threshold` the user types the pixel threshold (`pixel_value`); it is
    applied, and saved, as the percentile of healthy validation pixels that reproduces
    it (params.yaml has no raw threshold key).
    """

    settings: Settings = Settings()
    typed_threshold: bool = False
    pixel_value: float = 0.1

    @property
    def threshold_mode(self) -> str:
        """The page's mode control: evaluate's modes plus "value"."""
        return "value" if self.typed_threshold else self.settings.threshold_mode

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Choice:
        """The page's starting point: what params.yaml (all groups) says evaluate runs with."""
        return cls(settings=p.from_mapping(Settings, params, "evaluate"))

    def with_controls(
        self, threshold_mode: str, pixel_value: float | None = None, **changes
    ) -> Choice:
        """This choice with the page's control values (`changes`: `Settings` fields)."""
        typed = threshold_mode == "value"
        mode = self.settings.threshold_mode if typed else threshold_mode
        return Choice(
            settings=replace(self.settings, threshold_mode=mode, **changes),
            typed_threshold=typed,
            pixel_value=self.pixel_value if pixel_value is None else pixel_value,
        )


def pool_validation(
    manifest: pd.DataFrame,
    paths: AppPaths,
    settings: Settings,
    n_jobs: int = 1,
) -> HealthyValidation:
    """Healthy validation values after this post-processing, exactly as evaluate pools them.

    Depends on erosion, median filter, reduction and normalisation only (not on
    thresholds), which is what the page caches it on. `n_jobs` series are read in
    parallel (the slow part on real data: about 0.4 s per 40-slice 256-px series on one core).
    """
    return healthy_validation(manifest, paths.pipeline_paths(), replace(settings, n_jobs=n_jobs))


def percentile_for_value(values: np.ndarray, value: float) -> float:
    """The percentile whose threshold on `values` separates them exactly as `value` does.

    It points midway between the largest value <= `value` and the next one, so
    ``np.percentile(values, p)`` (linear) lands strictly between them and rounding
    of p cannot move a validation pixel across the threshold.
    """
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    if ordered.size == 0:
        raise ValueError("no healthy validation pixels to express a threshold as a percentile")
    at_or_below = int(np.searchsorted(ordered, value, side="right"))
    if at_or_below == 0:
        return 0.0
    if at_or_below >= ordered.size or ordered.size == 1:
        return 100.0
    return 100.0 * (at_or_below - 0.5) / (ordered.size - 1)


@dataclass(frozen=True)
class Decision:
    """The thresholds in force and the `evaluate` params that reproduce them."""

    thresholds: Thresholds
    params: dict[str, Any]


def decide(validation: HealthyValidation, choice: Choice) -> Decision:
    """Thresholds for `choice`, chosen on healthy validation by evaluate's own function.

    In "value" mode the typed pixel value becomes the percentile that reproduces
    it, and the threshold in force is the one evaluate will compute from that
    percentile: what the page shows is what `dvc exp run` will give.
    """
    settings = choice.settings
    if choice.typed_threshold:
        percentile = percentile_for_value(validation.pixel_values, choice.pixel_value)
        settings = replace(settings, threshold_mode="percentile", percentile=percentile)
    thresholds = thresholds_for(validation, settings)
    params = {k: v for k, v in asdict(settings).items() if k in EVALUATE_KEYS}
    return Decision(thresholds, params)


@dataclass(frozen=True)
class SeriesResult:
    """One series, post-processed at the thresholds in force, ready to draw.

    Stacks are ``[k, row, col]`` on the model grid; `truth` is None without ground
    truth, else a bool stack (all False on slices it does not cover). `table` has one
    row per slice (manifest columns, evaluate's scores, ``detected_px``,
    ``n_components``, ``score`` = the chosen reduction, ``predicted``).
    """

    series_uid: str
    ct: np.ndarray
    cleaned: np.ndarray
    labels: np.ndarray
    truth: np.ndarray | None
    table: pd.DataFrame


def series_task(
    manifest: pd.DataFrame,
    paths: AppPaths,
    series_uid: str,
    settings: Settings,
    thresholds: Thresholds | None,
    normalizer: Normalizer | None = None,
) -> SeriesTask:
    """evaluate's unit of work for one series, so the app goes through the same loaders."""
    rows = manifest[manifest["series_uid"] == series_uid]
    if rows.empty:
        raise KeyError(f"series {series_uid} is not in {paths.slices}")
    return SeriesTask(
        series_uid=series_uid,
        rows=rows.sort_values("slice_index").reset_index(drop=True),
        detection=paths.detection(series_uid),
        ground_truth=paths.ground_truth / names.check_series_uid(series_uid),
        root=paths.root,
        settings=settings,
        thresholds=thresholds,
        normalizer=normalizer,
        keep="all",
    )


def analyse_series(
    manifest: pd.DataFrame,
    paths: AppPaths,
    series_uid: str,
    settings: Settings,
    thresholds: Thresholds,
    normalizer: Normalizer | None = None,
) -> SeriesResult:
    """Scores, decisions, post-processed maps and truth: one call of evaluate's `evaluate_series`.

    Raises FileNotFoundError when the series has no detection volume (the page says so).
    """
    task = series_task(manifest, paths, series_uid, settings, thresholds, normalizer)
    result = evaluate_series(task)
    table = task.rows.merge(
        result.slices.drop(columns="slice_index"), on="image_id", how="left", validate="one_to_one"
    )
    table = decide_slices(table, thresholds, settings.reduction)
    held = result.arrays
    return SeriesResult(
        series_uid=series_uid,
        ct=read_ct_stack(task),
        cleaned=held.cleaned,
        labels=held.labels,
        truth=held.truth,
        table=table,
    )


def read_ct_stack(task: SeriesTask) -> np.ndarray:
    """The brain-window PNGs of a series as a ``[k, row, col]`` uint8 stack."""
    return np.stack([manifest.read_png(task.root / path) for path in task.rows["image_path"]])


def series_counts(table: pd.DataFrame) -> dict[str, int]:
    """The series-level numbers the page shows next to the view (used slices only,
    like evaluate's metrics)."""
    used = table[table["use"]]
    healthy = used[used["any"] == 0]
    bleeding = used[used["any"] == 1]
    return {
        "slices": len(table),
        "used_slices": len(used),
        "flagged_slices": int(used["predicted"].sum()),
        "bleed_slices": len(bleeding),
        "bleed_slices_flagged": int(bleeding["predicted"].sum()),
        "detections": int(used["n_components"].sum()),
        "fp_components_healthy": int(healthy["n_components"].sum()),
        "fp_slices_healthy": int(healthy["predicted"].sum()),
    }
