"""The review page: one CT series under the thresholding choices evaluation offers.

Served by ``ichinpaint app`` (``streamlit run`` on this file; options after ``--``).
It reads the pipeline's outputs (slice PNGs, anomaly NIfTIs, HU volumes for the
native-resolution view, ground truth, params.yaml, metrics/reports/detection.json), or with
``--predictions`` a predict output folder, and never runs the model. All computing is in
``ichinpaint.app.data`` (evaluate's own functions); this file is layout and caching.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ichinpaint.app import data, native, predictions, view
from ichinpaint.app.params import params_group, read_params, save_evaluate_params
from ichinpaint.constants import SUBTYPES
from ichinpaint.evaluation.normalize import Normalizer
from ichinpaint.evaluation.postprocess import SCORE_NAMES
from ichinpaint.evaluation.settings import Settings
from ichinpaint.evaluation.thresholds import HealthyValidation, Thresholds

SPLITS = ("test", "val")
MODE_HELP = {
    "percentile": "pixel threshold = this percentile of healthy validation brain pixels; "
    "a slice is flagged when a detection survives",
    "fpr": "also a slice threshold on the reduction: at most this fraction of healthy "
    "validation slices above it",
    "value": "type the pixel threshold; saved as the healthy-validation percentile "
    "that reproduces it",
}


def parse_config(argv: list[str]) -> argparse.Namespace:
    """Options that ``ichinpaint app`` passes after ``--`` (unknown ones are ignored)."""
    parser = argparse.ArgumentParser(prog="streamlit_app.py")
    parser.add_argument("--root", default=".")
    parser.add_argument("--slices", default="data/processed/slices.csv")
    parser.add_argument("--detections", default="data/detections")
    parser.add_argument("--metrics", default="metrics/reports/detection.json")
    parser.add_argument("--ground_truth", default="")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--n_jobs", type=int, default=1)
    parser.add_argument("--nifti", default="data/interim/nifti")
    parser.add_argument("--predictions", default="")
    return parser.parse_known_args(argv)[0]


def app_paths(config: argparse.Namespace) -> data.AppPaths:
    """Paths from the options; ground truth defaults to ``<data.raw_dir>/ground_truth``."""
    root = Path(config.root)
    params_path = Path(config.params) if Path(config.params).is_absolute() else root / config.params
    ground_truth = config.ground_truth
    if not ground_truth:
        raw_dir = "data/raw/synthetic"
        if params_path.exists():
            raw_dir = params_group(read_params(params_path), "data").get("raw_dir", raw_dir)
        ground_truth = str(Path(raw_dir) / "ground_truth")
    return data.AppPaths.under(
        root,
        slices=config.slices,
        detections=config.detections,
        metrics=config.metrics,
        ground_truth=ground_truth,
        params=config.params,
    )


def _stamp(*paths: Path) -> tuple[float, ...]:
    """Modification times: cache keys change when the pipeline rewrites an output."""
    return tuple(p.stat().st_mtime if p.exists() else -1.0 for p in paths)


def _paths_key(paths: data.AppPaths) -> tuple[str, ...]:
    return tuple(str(v) for v in asdict(paths).values())


def _paths_from_key(key: tuple[str, ...]) -> data.AppPaths:
    return data.AppPaths(*(Path(v) for v in key))


@st.cache_data(show_spinner="Reading the slice manifest…")
def cached_manifest(paths_key: tuple[str, ...], stamp: tuple[float, ...]) -> pd.DataFrame:
    return data.load_manifest(_paths_from_key(paths_key))


@st.cache_data(show_spinner="Pooling healthy validation series…", max_entries=16)
def cached_validation(
    paths_key: tuple[str, ...],
    settings: dict[str, Any],
    stamp: tuple[float, ...],
    n_jobs: int = 1,
) -> HealthyValidation:
    """`settings`: only the `Settings` fields pooling depends on (`POOLING_KEYS`), so that
    changing a threshold or a component size does not pool again."""
    paths = _paths_from_key(paths_key)
    manifest = cached_manifest(paths_key, stamp)
    return data.pool_validation(manifest, paths, Settings(**settings), n_jobs)


# What pooling healthy validation depends on: post-processing before the threshold.
POOLING_KEYS = ("erosion_px", "median_size", "reduction", "normalize", "canvas", "img_size")


def validation_for(
    paths_key: tuple[str, ...], settings: Settings, stamp: tuple[float, ...], n_jobs: int
) -> HealthyValidation:
    pooling = {k: v for k, v in asdict(settings).items() if k in POOLING_KEYS}
    return cached_validation(paths_key, pooling, stamp, n_jobs)


@st.cache_data(show_spinner="Post-processing the series…", max_entries=32)
def cached_series(
    paths_key: tuple[str, ...],
    series_uid: str,
    settings: dict[str, Any],
    thresholds: tuple[Any, ...],
    stamp: tuple[float, ...],
    normalizer: dict[str, Any] | None = None,
) -> data.SeriesResult:
    paths = _paths_from_key(paths_key)
    manifest = cached_manifest(paths_key, stamp[:1])
    return data.analyse_series(
        manifest,
        paths,
        series_uid,
        Settings(**settings),
        Thresholds(*thresholds),
        Normalizer.from_json(normalizer) if normalizer else None,
    )


def show_problems(paths: data.AppPaths) -> None:
    """Messages for missing outputs; stops the page when nothing can be shown."""
    problems = data.check_outputs(paths)
    for problem in problems:
        (st.error if problem.fatal else st.info)(problem.message)
    if any(p.fatal for p in problems):
        st.stop()


def series_label(row: pd.Series) -> str:
    bleeds = f"{int(row.bleed_slices)} bleed" if row.bleed_slices else "healthy"
    missing = "" if row.has_detection else " · no anomaly map"
    return f"{row.series_uid} · {bleeds}{missing}"


def choose_series(overview: pd.DataFrame) -> pd.Series | None:
    labels = {row.series_uid: series_label(row) for row in overview.itertuples()}
    uid = st.sidebar.selectbox(
        "Series", list(labels), format_func=labels.get, key="series", help="bleeding series first"
    )
    if uid is None:
        return None
    series = overview.set_index("series_uid").loc[uid]
    st.sidebar.caption(
        f"patient {series.patient_id}, {series.n_slices} slices, "
        f"{int(series.bleed_slices)} with a bleed label"
    )
    return series


def threshold_controls(start: data.Choice) -> data.Choice:
    """Sidebar widgets; their first values come from params.yaml's `evaluate` group."""
    sb = st.sidebar
    sb.subheader("Threshold")
    mode = sb.radio(
        "Threshold mode",
        data.THRESHOLD_MODES,
        index=data.THRESHOLD_MODES.index(start.threshold_mode),
        key="threshold_mode",
        horizontal=True,
    )
    sb.caption(MODE_HELP[mode])
    settings = start.settings
    values: dict[str, Any] = {"threshold_mode": mode}
    if mode in ("percentile", "fpr"):
        values["percentile"] = sb.number_input(
            "Percentile of healthy validation pixels", 0.0, 100.0, float(settings.percentile),
            step=0.1, format="%.3f", key="percentile",
        )  # fmt: skip
    if mode == "fpr":
        values["target_fpr"] = sb.number_input(
            "Target false-positive rate (healthy validation slices)", 0.0, 0.99,
            float(settings.target_fpr), step=0.01, format="%.3f", key="target_fpr",
        )  # fmt: skip
    if mode == "value":
        values["pixel_value"] = sb.number_input(
            "Pixel threshold (x 80 HU)", 0.0, 10.0, float(start.pixel_value),
            step=0.005, format="%.4f", key="pixel_value",
        )  # fmt: skip
    values["reduction"] = sb.selectbox(
        "Slice score (reduction)", SCORE_NAMES, index=SCORE_NAMES.index(settings.reduction),
        key="reduction",
    )  # fmt: skip
    sb.subheader("Post-processing")
    values["erosion_px"] = int(
        sb.number_input(
            "Brain mask erosion (px)", 0, 20, int(settings.erosion_px), key="erosion_px"
        )
    )
    values["median_size"] = int(
        sb.number_input("Median filter size (px, ≤1 off)", 0, 15, int(settings.median_size), key="median_size")
    )  # fmt: skip
    values["min_component_px"] = int(
        sb.number_input("Minimum component (px)", 1, 10_000, int(settings.min_component_px), key="min_component_px")
    )  # fmt: skip
    values["consistency_3d"] = sb.toggle(
        "3-D consistency (confirm on a neighbour slice)",
        bool(settings.consistency_3d),
        key="consistency_3d",
    )
    return start.with_controls(**values)


def starting_choice(
    params: dict[str, Any], paths_key: tuple[str, ...], stamp: tuple, n_jobs: int
) -> data.Choice:
    """params.yaml's evaluate settings; the typed threshold starts at the one they give."""
    start = data.Choice.from_params(params)
    try:
        validation = validation_for(paths_key, start.settings, stamp, n_jobs)
    except (FileNotFoundError, ValueError):
        return start  # the page reports this below, with the user's settings
    value = data.decide(validation, start.with_controls(threshold_mode="percentile"))
    return replace(start, pixel_value=round(value.thresholds.pixel_threshold, 4))


def save_button(paths: data.AppPaths, decision: data.Decision) -> None:
    sb = st.sidebar
    sb.subheader("Reproduce")
    if sb.button("Save as params", key="save", help="write these evaluate keys to params.yaml"):
        changed = save_evaluate_params(paths.params, decision.params)
        if changed:
            lines = ", ".join(f"{k}: {old} → {new}" for k, (old, new) in changed.items())
            st.sidebar.success(
                f"Saved to {paths.params.name}: {lines}. `dvc exp run` reproduces this view."
            )
        else:
            st.sidebar.success(f"{paths.params.name} already has these settings.")


def threshold_summary(decision: data.Decision, evaluated: dict[str, Any] | None) -> str:
    t = decision.thresholds
    text = f"Pixel threshold in force: **{t.pixel_threshold:.4f}**"
    if t.mode == "fpr":
        text += f"; slice threshold on `{t.decision_score}`: **{t.slice_threshold:.4f}**"
    text += f" (pixel threshold at percentile {decision.params['percentile']:.4f} of healthy validation)"
    if evaluated and evaluated.get("pixel_threshold") is not None:
        text += f". Last `dvc repro evaluate` chose {evaluated['pixel_threshold']:.4f}"
        if evaluated.get("threshold_mode") == "fpr":
            text += f" / slice {evaluated.get('slice_threshold', float('nan')):.4f}"
    return text + "."


def show_counts(counts: dict[str, int]) -> None:
    cols = st.columns(4)
    cols[0].metric("Slices flagged", f"{counts['flagged_slices']} / {counts['used_slices']}")
    cols[1].metric(
        "Bleed slices flagged", f"{counts['bleed_slices_flagged']} / {counts['bleed_slices']}"
    )
    cols[2].metric("Detections (components)", counts["detections"])
    cols[3].metric("FP components on healthy slices", counts["fp_components_healthy"])


def view_controls() -> float:
    st.sidebar.subheader("View")
    return st.sidebar.slider(
        "Anomaly overlay opacity", 0.0, 1.0, 0.7, 0.05, key="opacity",
        help="at full value; weaker anomalies are drawn more transparent",
    )  # fmt: skip


@st.cache_data(max_entries=4, show_spinner="Reading the native CT...")
def cached_native_ct(nifti_dir: str, uid: str, n_slices: int, stamp: tuple[float, ...]):
    return native.native_ct(Path(nifti_dir), uid, n_slices)


def show_slice(
    result: data.SeriesResult,
    decision: data.Decision,
    uid: str,
    opacity: float,
    native_ct=None,
    canvas: int = 256,
) -> int:
    """The slice at the CT's native resolution when its HU volume is there, else the model grid."""
    table = result.table
    n = len(table)
    start = int(table["score"].idxmax()) if table["use"].any() else 0
    k = st.slider("Slice", 0, n - 1, start, key=f"slice_{uid}") if n > 1 else 0
    vmax = max(2.0 * decision.thresholds.pixel_threshold, 0.05)
    truth = None if result.truth is None else result.truth[k]
    if native_ct is not None:
        shape = native_ct.shape[1:]
        layers = native.native_layers(result.cleaned[k], result.labels[k], truth, canvas, shape)
        ct, grid = native_ct[k], f"native {shape[1]}x{shape[0]}, map upsampled"
    else:
        layers = (result.cleaned[k], result.labels[k], truth)
        ct, grid = result.ct[k], f"model grid {result.ct.shape[-1]} px (no HU volume)"
    picture = view.compose_slice(
        ct, *layers, opacity=opacity, vmax=vmax, scale=view.display_scale(ct.shape[-1])
    )
    row = table.iloc[k]
    bleed = [s for s in SUBTYPES if int(row[s]) == 1]
    left, right = st.columns([3, 2])
    left.image(
        picture,
        caption=f"slice {k}: {row.image_id} ({grid}) — cyan: detections, red: ground truth, "
        f"colour: anomaly 0–{vmax:.3f} (x 80 HU)",
        width="stretch",
    )
    right.markdown(
        f"**{row.image_id}** (slice {k} of {n})\n\n"
        f"- CSV labels: {', '.join(bleed) if bleed else 'none (healthy)'}\n"
        f"- used by detection: {'yes' if row.use else 'no (mid-range filter)'}\n"
        f"- `{decision.thresholds.decision_score if decision.thresholds.mode == 'fpr' else 'score'}`"
        f": {row.score:.4f}; score_max {row.score_max:.4f}\n"
        f"- detections: {int(row.n_components)} ({int(row.detected_px)} px)\n"
        f"- flagged: **{'yes' if row.predicted else 'no'}**"
        + ("" if result.truth is not None else "\n- no ground truth for this series")
    )
    return k


def show_strip(result: data.SeriesResult, decision: data.Decision, k: int) -> None:
    t = decision.thresholds
    if t.mode == "fpr":
        column, threshold, label = (
            "score",
            t.slice_threshold,
            f"slice threshold ({t.decision_score})",
        )
    else:
        column, threshold, label = "score_max", t.pixel_threshold, "pixel threshold"
    st.image(
        view.score_strip(
            result.table,
            value_column=column,
            threshold=threshold,
            threshold_label=label,
            current_slice=k,
        ),
        caption=(
            f"{column} per slice; flagged when above the line"
            if t.mode == "fpr"
            else "post-processed maximum per slice; flagged when a component of at least "
            "the minimum size lies above the pixel threshold"
        ),
        width="stretch",
    )


@st.cache_data(max_entries=2, show_spinner="Reading the predict folder...")
def cached_predictions(folder: str, stamp: tuple[float, ...]):
    return predictions.read_predictions(folder)


@st.cache_data(max_entries=4, show_spinner="Reading the series...")
def cached_predicted(folder: str, uid: str, stamp: tuple[float, ...]):
    return predictions.load_predicted_series(folder, uid)


def predictions_page(folder: Path) -> None:
    """A predict output folder: native CT, the map and detections, probabilities per slice."""
    try:
        counts, series = cached_predictions(str(folder), _stamp(folder / "predict.json"))
    except (FileNotFoundError, ValueError) as error:
        st.error(f"{error}. Run `ichinpaint predict <dicom folder> --out {folder}` first.")
        st.stop()
    threshold = float(counts["pixel_threshold"])
    st.markdown(
        f"Predict folder `{folder}`: **{counts['series_scored']}** series scored, "
        f"**{counts['series_flagged']}** flagged ({counts['files_skipped']} files skipped, "
        f"{counts['series_refused']} series refused; see files.csv, series.csv). "
        f"Decision: {counts['threshold_mode']}, pixel threshold **{threshold:.4f}**, "
        f"calibration `{counts['calibration']}`; model `{counts['model_sha256'][:12]}`, "
        f"params `{counts['params_hash'][:12]}`."
    )
    if series.empty:
        st.warning("No scored series in this folder.")
        st.stop()
    labels = {
        row.series_uid: f"{row.series_uid} — {row.flagged_slices} flagged, {row.largest_ml:.2f} mL"
        for row in series.itertuples()
    }
    uid = st.sidebar.selectbox("Series", list(labels), format_func=labels.get, key="series")
    opacity = view_controls()
    out = folder / "series" / uid
    try:
        result = cached_predicted(str(folder), uid, _stamp(out / "anomaly.nii.gz"))
    except (FileNotFoundError, ValueError) as error:
        st.error(f"Cannot show series {uid}: {error}")
        st.stop()
    table, summary = result.table, result.summary
    largest = summary.get("largest_detection") or {}
    columns = st.columns(3)
    columns[0].metric("Slices flagged", f"{summary['flagged_slices']} / {summary['slices']}")
    columns[1].metric("Largest detection", f"{largest.get('volume_ml', 0.0):.2f} mL")
    columns[2].metric("Highest p(any)", f"{summary['p_any_max']:.3f}")
    n = len(table)
    k = (
        st.slider("Slice", 0, n - 1, int(table["p_any"].idxmax()), key=f"slice_{uid}")
        if n > 1
        else 0
    )
    vmax = max(2.0 * threshold, 0.05)
    picture = view.compose_slice(
        result.ct[k], result.anomaly[k], result.detections[k], None, opacity=opacity, vmax=vmax,
        scale=view.display_scale(result.ct.shape[-1]),
    )  # fmt: skip
    row = table.iloc[k]
    left, right = st.columns([3, 2])
    rows, cols = result.ct.shape[1:]
    left.image(
        picture,
        caption=f"slice {k}: {row.image_id} (native {cols}x{rows}) — cyan: detections, "
        f"colour: anomaly 0–{vmax:.3f} (x 80 HU)",
        width="stretch",
    )
    right.markdown(
        f"**{row.image_id}** (slice {k} of {n})\n\n"
        f"- p(any hemorrhage): **{row.p_any:.3f}**\n"
        f"- used by detection: {'yes' if row.use else 'no (mid-range filter)'}\n"
        f"- score: {row.score:.4f}; score_max {row.score_max:.4f}\n"
        f"- detections: {int(row.n_components)} ({row.detected_area_mm2:.0f} mm²)\n"
        f"- flagged: **{'yes' if row.predicted else 'no'}**"
    )
    fpr = counts["threshold_mode"] == "fpr"
    st.image(
        view.score_strip(
            table.assign(any=0),
            value_column="score" if fpr else "score_max",
            threshold=float(counts["slice_threshold"]) if fpr else threshold,
            threshold_label="slice threshold" if fpr else "pixel threshold",
            current_slice=k,
        ),
        caption="per slice; no labels for predicted studies",
        width="stretch",
    )
    with st.expander("Per-slice table"):
        st.dataframe(table, hide_index=True)
    with st.expander("summary.json"):
        st.json(summary)


def main() -> None:
    st.set_page_config(page_title="ichinpaint review", layout="wide")
    st.title("ichinpaint review")
    config = parse_config(sys.argv[1:])
    if config.predictions:
        predictions_page(Path(config.predictions))
        return
    paths = app_paths(config)
    show_problems(paths)

    params = read_params(paths.params)
    paths_key = _paths_key(paths)
    stamp = _stamp(paths.slices, paths.detections)
    manifest = cached_manifest(paths_key, stamp[:1])

    split = st.sidebar.radio("Split", SPLITS, key="split", horizontal=True)
    overview = data.series_overview(manifest, paths, (split,))
    if overview.empty:
        st.warning(f"No {split} series in `{paths.slices}`.")
        st.stop()
    series = choose_series(overview)

    start = starting_choice(params, paths_key, stamp, config.n_jobs)
    choice = threshold_controls(start)
    settings = choice.settings
    try:
        validation = validation_for(paths_key, settings, stamp, config.n_jobs)
        decision = data.decide(validation, choice)
    except (FileNotFoundError, ValueError) as error:
        st.error(
            f"Cannot choose thresholds on healthy validation: {error}. "
            "Run `dvc repro detect` (it writes the validation maps)."
        )
        st.stop()
    opacity = view_controls()
    save_button(paths, decision)
    st.markdown(threshold_summary(decision, data.read_detection_metrics(paths)))

    uid = str(series.name)
    if not series.has_detection:
        st.warning(
            f"Series {uid} has no anomaly map (`{paths.detection(uid)}`): run `dvc repro detect`."
        )
        st.stop()
    try:
        result = cached_series(
            paths_key,
            uid,
            asdict(settings),
            tuple(asdict(decision.thresholds).values()),
            stamp + _stamp(paths.detection(uid)),
            validation.normalizer.to_json() if validation.normalizer else None,
        )
    except (FileNotFoundError, ValueError) as error:
        # Outputs of different runs mixed (e.g. png.img_size changed since detect ran).
        st.error(
            f"Cannot show series {uid}: {error}. Run `dvc repro detect` to bring it up to date."
        )
        st.stop()
    counts = data.series_counts(result.table)
    show_counts(counts)
    if counts["detections"] == 0:
        st.info("No detections on this series at these settings.")
    nifti_dir = (
        Path(config.nifti) if Path(config.nifti).is_absolute() else paths.root / config.nifti
    )
    native_stack = cached_native_ct(
        str(nifti_dir), uid, len(result.table), _stamp(nifti_dir / f"{uid}.nii.gz")
    )
    k = show_slice(result, decision, uid, opacity, native_stack, settings.canvas)
    show_strip(result, decision, k)
    with st.expander("Per-slice table"):
        st.dataframe(result.table, hide_index=True)
    evaluated = data.read_detection_metrics(paths)
    if evaluated:
        with st.expander("metrics/reports/detection.json (last evaluate run)"):
            st.json(evaluated)


main()
