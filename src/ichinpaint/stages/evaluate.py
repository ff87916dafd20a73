"""Choose thresholds on healthy validation series, post-process the anomaly maps,
and measure: slice and pixel metrics (metrics/reports/detection.json; its headline
metrics/detection.json), ROC/PR curves (metrics/plots/), an overlay gallery
(metrics/gallery/) and a Kaggle-format submission of cross-fitted probabilities
(data/submission.csv)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint import params as p
from ichinpaint.evaluation.decision import decision_from_evaluation, write_decision
from ichinpaint.evaluation.normalize import MODES as NORMALIZE_MODES
from ichinpaint.evaluation.pipeline import Paths, Settings, run_evaluation
from ichinpaint.evaluation.thresholds import MODES
from ichinpaint.io import staged_outputs
from ichinpaint.scores import REDUCTIONS

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {
    "auroc": "slice_auroc",
    "ap": "slice_ap",
    "fp": "fp_components_per_healthy_series",  # per healthy test series
    "auprc": "pixel_auprc",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    parser.add_argument(
        "--threshold_mode",
        choices=MODES,
        default=d.threshold_mode,
        help="percentile: pixel threshold from healthy validation pixels, a slice is positive "
        "when a detection survives; fpr: also a slice-score threshold at target_fpr",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=d.percentile,
        help="percentile of healthy validation brain pixels used as the pixel threshold",
    )
    parser.add_argument(
        "--target_fpr",
        type=float,
        default=d.target_fpr,
        help="fpr mode: fraction of healthy validation slices allowed above the slice threshold",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_MODES,
        default=d.normalize,
        help="none | location: divide maps by the healthy spread at each depth from the mask "
        "edge and slice level, learned on healthy validation series",
    )
    parser.add_argument(
        "--erosion_px",
        type=int,
        default=d.erosion_px,
        help="erode the brain mask by this many pixels (skull rim false positives)",
    )
    parser.add_argument(
        "--median_size",
        type=int,
        default=d.median_size,
        help="median filter size in pixels (<= 1: none)",
    )
    parser.add_argument(
        "--min_component_px",
        type=int,
        default=d.min_component_px,
        help="drop detected components smaller than this (pixels)",
    )
    parser.add_argument(
        "--consistency_3d",
        action=argparse.BooleanOptionalAction,
        default=d.consistency_3d,
        help="keep a detection only if it overlaps one on an adjacent slice",
    )
    parser.add_argument(
        "--reduction",
        choices=REDUCTIONS,
        default=d.reduction,
        help="slice score used for ROC/AP, the fpr threshold and the probabilities; "
        "score_components: from the post-processed detections (largest component's mass; "
        "percentile mode only)",
    )
    parser.add_argument(
        "--n_splits",
        type=int,
        default=d.n_splits,
        help="patient folds for cross-fitting the probabilities on test",
    )
    parser.add_argument(
        "--gallery_per_category",
        type=int,
        default=d.gallery_per_category,
        help="overlay PNGs per category (TP per subtype, missed bleeds, false positives)",
    )
    parser.add_argument("--n_jobs", type=int, default=-1, help="parallel series (-1: all cores)")
    parser.add_argument(
        "--canvas", type=int, default=d.canvas, help="png stage canvas (ground truth geometry)"
    )
    parser.add_argument(
        "--img_size", type=int, default=d.img_size, help="model grid size in pixels"
    )
    parser.add_argument(
        "--slices", type=Path, default=Path("data/processed/slices.csv"), help="png stage manifest"
    )
    parser.add_argument(
        "--detections",
        type=Path,
        default=Path("data/detections"),
        help="detect stage output folder",
    )
    parser.add_argument(
        "--detect_metrics",
        type=Path,
        default=Path("metrics/reports/detect.json"),
        help="detect stage metrics (seconds_per_series)",
    )
    parser.add_argument(
        "--ground_truth",
        type=Path,
        default=Path("data/raw/synthetic/ground_truth"),
        help="synthetic ground truth folder; pixel metrics are skipped where absent",
    )
    parser.add_argument(
        "--lesion_masks",
        default="",
        help="folder of user lesion masks for real data (data.lesion_masks_dir; '' = none): "
        "<series_uid>.nii.gz, or <name>.nii.gz + <name>.json listing image_ids; see "
        "docs/real-data.md. Used instead of the synthetic ground truth for pixel metrics",
    )
    parser.add_argument(
        "--rim_px",
        type=int,
        default=d.rim_px,
        help="false positives within this many pixels of the brain mask edge count as 'rim'",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="folder the manifest's paths are relative to"
    )
    parser.add_argument(
        "--metrics", type=Path, default=Path("metrics/reports/detection.json"), help="metrics JSON"
    )
    parser.add_argument(
        "--plots", type=Path, default=Path("metrics/plots"), help="ROC/PR curve tables folder"
    )
    parser.add_argument(
        "--gallery", type=Path, default=Path("metrics/gallery"), help="overlay PNG folder"
    )
    parser.add_argument(
        "--submission", type=Path, default=Path("data/submission.csv"), help="Kaggle-format CSV"
    )
    parser.add_argument(
        "--decision",
        type=Path,
        default=Path("models/decision.json"),
        help="the decision artifact predict applies (thresholds, post-processing, calibrator)",
    )


# Ranges of the settings above, checked by the CLI before any work (ichinpaint.params).
PARAM_RULES = {
    "percentile": p.between(0, 100, low_open=True),
    "target_fpr": p.between(0, 1, high_open=True),
    "erosion_px": p.at_least(0),
    "median_size": p.at_least(0),
    "min_component_px": p.at_least(0),
    "n_splits": p.at_least(2),
    "gallery_per_category": p.at_least(0),
    "rim_px": p.at_least(0),
    "n_jobs": p.N_JOBS,
    "canvas": p.at_least(8),
    "img_size": p.at_least(8),
}


def run(args: argparse.Namespace) -> str:
    settings = Settings(
        threshold_mode=args.threshold_mode,
        percentile=args.percentile,
        target_fpr=args.target_fpr,
        normalize=args.normalize,
        erosion_px=args.erosion_px,
        median_size=args.median_size,
        min_component_px=args.min_component_px,
        consistency_3d=args.consistency_3d,
        reduction=args.reduction,
        n_splits=args.n_splits,
        gallery_per_category=args.gallery_per_category,
        rim_px=args.rim_px,
        canvas=args.canvas,
        img_size=args.img_size,
        n_jobs=args.n_jobs,
    )
    paths = Paths(
        slices=args.slices,
        detections=args.detections,
        detect_metrics=args.detect_metrics,
        ground_truth=args.ground_truth,
        metrics=args.metrics,
        plots=args.plots,
        gallery=args.gallery,
        submission=args.submission,
        root=args.root,
        lesion_masks=Path(args.lesion_masks) if args.lesion_masks else None,
    )
    with staged_outputs():  # metrics, plots, gallery and submission appear together
        m = run_evaluation(paths, settings)
        write_decision(args.decision, decision_from_evaluation(paths, settings, m))

    def fmt(key: str) -> str:
        value = m.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"{m['test_series']} test series, {m['test_slices']} slices ({m['test_positive_slices']} positive): "
        f"slice AUROC {fmt('slice_auroc')}, sens {fmt('slice_sensitivity')}, spec {fmt('slice_specificity')}, "
        f"Dice {fmt('dice')}, FP comps/healthy series {fmt('fp_components_per_healthy_series')}, "
        f"pixel threshold {m['pixel_threshold']:.4f}"
    )
