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
from ichinpaint.evaluation.pipeline import Paths, run_evaluation
from ichinpaint.evaluation.settings import Settings
from ichinpaint.io import staged_outputs

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {
    "auroc": "slice_auroc",
    "ap": "slice_ap",
    "fp": "fp_components_per_healthy_series",  # per healthy test series
    "auprc": "pixel_auprc",
}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p.add_options(parser, Settings)
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
PARAM_RULES = p.rules_of(Settings)


def run(args: argparse.Namespace) -> str:
    settings = p.from_args(Settings, args)
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
        evaluation = run_evaluation(paths, settings)
        write_decision(args.decision, decision_from_evaluation(paths, settings, evaluation))
    m = evaluation.metrics

    def fmt(key: str) -> str:
        value = m.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"{m['test_series']} test series, {m['test_slices']} slices ({m['test_positive_slices']} positive): "
        f"slice AUROC {fmt('slice_auroc')}, sens {fmt('slice_sensitivity')}, spec {fmt('slice_specificity')}, "
        f"Dice {fmt('dice')}, FP comps/healthy series {fmt('fp_components_per_healthy_series')}, "
        f"pixel threshold {m['pixel_threshold']:.4f}"
    )
