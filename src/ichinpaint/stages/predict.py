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
from pathlib import Path

from ichinpaint.io import write_json

# What `dvc metrics show` prints (--headline); the whole count is the --metrics report.
HEADLINE = {"images": "files_scored", "excluded": "files_skipped"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="folder of DICOM files (searched recursively)")
    parser.add_argument("--out", default="data/predictions", help="output folder (replaced whole)")
    parser.add_argument(
        "--decision", default="models/decision.json", help="the evaluate stage's decision artifact"
    )
    parser.add_argument(
        "--model", default="models/inpainter.ckpt", help="inpainter weights (+ .json, .onnx beside)"
    )
    parser.add_argument(
        "--kaggle_submission",
        "--kaggle-submission",
        default="",
        help="also write a Kaggle submission CSV here (every input image, six rows each)",
    )
    parser.add_argument(
        "--metrics", default="metrics/reports/predict.json", help="the run's counts (JSON)"
    )
    parser.add_argument(
        "--backend", default="torch", choices=("torch", "onnxruntime"), help="UNet runtime"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (torch)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per UNet call")
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 UNet (CUDA only)"
    )
    parser.add_argument(
        "--channels_last", action=argparse.BooleanOptionalAction, default=True, help="UNet layout"
    )
    parser.add_argument(
        "--mask_method", default="threshold", help="brain mask method (params.yaml mask.method)"
    )
    parser.add_argument("--mask_model_path", default="", help="mask.model_path (method model)")
    parser.add_argument("--mask_model_size", type=int, default=512, help="mask.model_size")
    parser.add_argument("--mask_model_output", default="logits", help="mask.model_output")
    parser.add_argument(
        "--midrange_min_fraction",
        type=float,
        default=0.05,
        help="png.midrange_min_fraction: slices below are not inpainted (score 0)",
    )
    parser.add_argument(
        "--spacing_tolerance", type=float, default=0.1, help="nifti.spacing_tolerance"
    )
    parser.add_argument(
        "--max_overlays", type=int, default=8, help="overlay PNGs per series (flagged slices first)"
    )
    parser.add_argument("--n_jobs", type=int, default=-1, help="processes for per-series work")
    parser.add_argument(
        "--chunk_series",
        type=int,
        default=32,
        help="series prepared and detected together (bounds the temporary work folder)",
    )
    parser.add_argument(
        "--keep_work",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep <out>/work (HU volumes, masks, model-grid PNGs and maps)",
    )
    parser.add_argument(
        "--allow_other_model",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run even if the model is not the one the decision was chosen for",
    )


def run(args: argparse.Namespace) -> str:
    from ichinpaint.predict.run import PredictOptions, run_predict

    mask_options = {}
    if args.mask_method == "model":
        if not args.mask_model_path:
            raise ValueError("--mask_method model needs --mask_model_path")
        mask_options = {
            "model_path": args.mask_model_path,
            "model_size": args.mask_model_size,
            "model_output": args.mask_model_output,
        }
    options = PredictOptions(
        decision=Path(args.decision),
        model=Path(args.model),
        backend=args.backend,
        device=args.device,
        batch_size=args.batch_size,
        bf16=args.bf16,
        channels_last=args.channels_last,
        mask_method=args.mask_method,
        mask_options=mask_options,
        midrange_min_fraction=args.midrange_min_fraction,
        spacing_tolerance=args.spacing_tolerance,
        max_overlays=args.max_overlays,
        n_jobs=args.n_jobs,
        keep_work=args.keep_work,
        chunk_series=args.chunk_series,
        allow_other_model=args.allow_other_model,
    )
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
