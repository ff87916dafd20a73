"""Find hemorrhage in a folder of DICOM files: a new study, or Kaggle's stage_2_test/.

Any folder, any file names and order, several series, no CSV. Each series goes
through the pipeline's own code (stacking, brain mask, model-grid PNGs, detection)
and evaluate's frozen decision (models/decision.json: post-processing, thresholds,
calibrator fitted on labelled held-out series, never on the scored ones). Writes into
<out>/: series/<series_uid>/{anomaly.nii.gz, detections.nii.gz, slices.csv,
summary.json, overlays/*.png}, plus slices.csv, series.csv, files.csv (every input
file: scored, skipped or in a refused series, with the reason) and predict.json.
--kaggle_submission PATH also writes a submission with six rows per input image.
See docs/predict.md.
"""

from __future__ import annotations

import argparse

from ichinpaint import params as p
from ichinpaint.io import write_json
from ichinpaint.predict.run import PredictOptions

# What `dvc metrics show` prints (--headline); the whole count is the --metrics report.
HEADLINE = {"images": "files_scored", "excluded": "files_skipped"}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = PredictOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="folder of DICOM files (searched recursively)")
    parser.add_argument("--out", default="data/predictions", help="output folder (replaced whole)")
    parser.add_argument(
        "--kaggle_submission",
        "--kaggle-submission",
        default="",
        help="also write a Kaggle submission CSV here (every input image, six rows each)",
    )
    parser.add_argument(
        "--metrics", default="metrics/reports/predict.json", help="the run's counts (JSON)"
    )
    p.add_options(parser, PredictOptions)


PARAM_RULES = p.rules_of(PredictOptions)


def check_args(args: argparse.Namespace) -> None:
    p.require(
        args.mask_method != "model" or bool(args.mask_model_path),
        "--mask_method model needs --mask_model_path",
    )


def run(args: argparse.Namespace) -> str:
    from ichinpaint.predict.run import run_predict

    options = p.from_args(PredictOptions, args)
    counts = run_predict(
        args.input, args.out, options, kaggle_submission=args.kaggle_submission or None
    )
    write_json(args.metrics, counts)
    text = (
        f"{counts['files_total']} files: {counts['files_scored']} scored, "
        f"{counts['files_skipped']} skipped, {counts['files_in_refused_series']} in refused series; "
        f"{counts['series_scored']} series scored, {counts['series_flagged']} flagged "
        f"({counts['slices_flagged']} slices) -> {args.out}"
    )
    if "submission_rows" in counts:
        text += (
            f"; submission {counts['submission_rows']} rows "
            f"({counts['submission_images_filled']} images filled)"
        )
    return text
