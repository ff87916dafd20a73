"""Inpaint every used val/test slice on the square grid and write anomaly maps and scores.

For each series of the chosen splits: every pattern of the detection grid (square
sizes x half-square shifts x 9 interleaved passes) that hides some brain is re-painted
as healthy by the trained inpainter, conditioned on the brain mask, the neighbouring
slices and everything outside the hidden squares; |original - re-painted| in
brain-window units (1.0 = 80 HU) is the anomaly map, combined over sizes and shifts.
Writes <out>/<series_uid>.nii.gz (float32, model grid, data[col, row, k]),
<out>/scores.csv (one row per used slice), <out>/overlays/*.png, <out>/settings.json
(the settings and the model's hash, copied into models/decision.json by evaluate) and
<metrics>. --backend onnxruntime runs the UNet from the ONNX export (CPU).
The study's settings: --strategy repaint --ddim_steps 50 --sizes 8 16 32 64 --offsets
(see docs/detection.md for the defaults and why).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint.io import atomic_dir, write_csv, write_json

STRATEGY_CHOICES = ("repaint", "partial", "onestep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slices", default="data/processed/slices.csv", help="slice manifest (png stage)"
    )
    parser.add_argument(
        "--model", default="models/inpainter.ckpt", help="inpainter weights (+ .json beside)"
    )
    parser.add_argument(
        "--nifti",
        default="data/interim/nifti",
        help="source volumes, for the maps' affine ('' = identity affine)",
    )
    parser.add_argument(
        "--canvas",
        type=int,
        default=256,
        help="the png stage's pad/crop canvas (png.canvas), for the maps' affine",
    )
    parser.add_argument(
        "--root", default=".", help="directory the manifest's relative paths start from"
    )
    parser.add_argument(
        "--out", default="data/detections", help="output directory (replaced whole)"
    )
    parser.add_argument("--metrics", default="metrics/detect.json", help="speed and counts (JSON)")
    # -- params.yaml `detect` --
    parser.add_argument(
        "--strategy",
        default="onestep",
        choices=STRATEGY_CHOICES,
        help="repaint: DDIM from noise with RePaint resampling (the study); partial: start "
        "from the original noised to start_fraction of T; onestep: one clean prediction per noise level",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[8, 32],
        help="square sizes in px at 256 (scaled to the model's image size)",
    )
    parser.add_argument(
        "--offsets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also the half-square shifted grids (4 grids per size instead of 1)",
    )
    parser.add_argument(
        "--ddim_steps",
        type=int,
        default=10,
        help="DDIM steps over the whole schedule (repaint, partial)",
    )
    parser.add_argument(
        "--start_fraction",
        type=float,
        default=0.5,
        help="partial: start the reverse process at this fraction of T",
    )
    parser.add_argument(
        "--jump_length", type=int, default=1, help="RePaint: DDIM steps re-noised per jump"
    )
    parser.add_argument(
        "--jump_n_sample",
        type=int,
        default=1,
        help="RePaint: times each jump segment is sampled (1 = no resampling)",
    )
    parser.add_argument(
        "--noise_levels",
        type=float,
        nargs="+",
        default=[0.5],
        help="onestep: noise levels (fractions of T) whose predictions are averaged",
    )
    parser.add_argument(
        "--combine",
        default="max",
        choices=("max", "mean"),
        help="how maps of the different sizes and shifts are combined per pixel",
    )
    parser.add_argument(
        "--batch_size", type=int, default=64, help="images per UNet call (mixed slices and passes)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="noise seed (per series: seed + series UID)"
    )
    parser.add_argument(
        "--splits", nargs="+", default=["val", "test"], help="splits whose series are detected"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 weights and activations in the UNet (CUDA only; the CPU stays float32)",
    )
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format for the UNet (faster on GPU and on this CPU)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the UNet (pays a compile time; worth it on GPU for big runs)",
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="run the UNet in torch or in onnxruntime (CPU; needs `ichinpaint export-onnx`, "
        "the .onnx beside --model)",
    )
    parser.add_argument(
        "--n_overlays",
        type=int,
        default=8,
        help="overlay PNGs: half the highest-scoring bleed slices, half the highest-scoring healthy ones",
    )


def run(args: argparse.Namespace) -> str:
    from ichinpaint.detection.record import file_sha256, settings_record
    from ichinpaint.detection.runner import (
        DetectSettings,
        pick_device,
        read_manifest,
        run_detection,
    )
    from ichinpaint.detection.strategies import Strategy
    from ichinpaint.model import load_inpainter
    from ichinpaint.onnxunet import onnx_net, onnx_path_for

    strategy = Strategy(
        name=args.strategy,
        ddim_steps=args.ddim_steps,
        start_fraction=args.start_fraction,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        noise_levels=tuple(args.noise_levels),
    )
    settings = DetectSettings(
        strategy=strategy,
        sizes_at_256=tuple(args.sizes),
        offsets=args.offsets,
        combine=args.combine,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    manifest = read_manifest(args.slices, args.splits)
    if manifest.empty:
        raise ValueError(f"{args.slices}: no slices in splits {args.splits}")
    device = pick_device("cpu" if args.backend == "onnxruntime" else args.device)
    module, spec = load_inpainter(args.model, device=device)
    net = onnx_net(onnx_path_for(args.model)) if args.backend == "onnxruntime" else None
    with atomic_dir(args.out) as tmp:
        result = run_detection(
            manifest,
            module,
            settings,
            out_dir=tmp,
            root=Path(args.root),
            nifti_dir=Path(args.nifti) if args.nifti else None,
            canvas=args.canvas,
            n_overlays=args.n_overlays,
            bf16=args.bf16,
            channels_last=args.channels_last,
            compile=args.compile,
            net=net,
        )
        write_csv(tmp / "scores.csv", result.scores)
        record = settings_record(
            settings,
            canvas=args.canvas,
            img_size=spec.img_size,
            model_sha256=file_sha256(args.model),
        )
        write_json(tmp / "settings.json", record)
    write_json(args.metrics, result.metrics)
    m = result.metrics
    return (
        f"{m['series']} series, {m['slices']} slices, {m['strategy_detail']}: "
        f"{m['forwards_per_slice']:.0f} UNet images/slice, {m['forwards_per_second']:.1f} img/s, "
        f"{m['seconds_per_series']:.1f} s/series on {m['device']}"
    )
