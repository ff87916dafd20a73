"""Inpaint every used val/test slice on the square grid and write anomaly maps and scores.

For each series of the chosen splits: every pattern of the detection grid (square
sizes x half-square shifts x 9 interleaved passes) that hides some brain is re-painted
as healthy by the trained inpainter, conditioned on the brain mask, the neighbouring
slices and everything outside the hidden squares; |original - re-painted| in
brain-window units (1.0 = 80 HU) is the anomaly map, combined over sizes and shifts.
Writes <out>/<series_uid>.nii.gz (float32, model grid, data[col, row, k]),
<out>/scores.csv (one row per used slice), <out>/overlays/*.png, and <metrics>.
The study's settings: --strategy repaint --ddim_steps 50 --sizes 8 16 32 64 --offsets
(see docs/detection.md for the defaults and why).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint import params as p
from ichinpaint.io import atomic_dir, write_csv, write_json

STRATEGY_CHOICES = ("repaint", "partial", "onestep", "hu_threshold")


# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"images": "slices", "s_per_series": "seconds_per_series"}


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
    parser.add_argument(
        "--metrics", default="metrics/reports/detect.json", help="speed and counts (JSON)"
    )
    # -- params.yaml `detect` --
    parser.add_argument(
        "--strategy",
        default="onestep",
        choices=STRATEGY_CHOICES,
        help="repaint: DDIM from noise with RePaint resampling (the study); partial: start "
        "from the original noised to start_fraction of T; onestep: one clean prediction per "
        "noise level; hu_threshold: no model, the share of each pixel in baseline_hu (baseline)",
    )
    parser.add_argument(
        "--sign",
        default="absolute",
        choices=("absolute", "positive"),
        help="absolute: |real - re-painted|; positive: only where the real slice is brighter "
        "(blood is hyperdense; cysts, atrophy and old infarcts are not)",
    )
    parser.add_argument(
        "--hu_gate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="multiply the map by the share of native pixels within gate_hu (from the HU volume): "
        "differences on bone, calcification, CSF or fat count for nothing",
    )
    parser.add_argument(
        "--gate_hu",
        type=float,
        nargs=2,
        default=[35.0, 100.0],
        metavar=("LOW", "HIGH"),
        help="HU band that could be blood (subacute 35-50, acute 50-90) for hu_gate",
    )
    parser.add_argument(
        "--baseline_hu",
        type=float,
        nargs=2,
        default=[55.0, 95.0],
        metavar=("LOW", "HIGH"),
        help="hu_threshold: the acute-blood HU band whose share per pixel is the map",
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
        "--n_overlays",
        type=int,
        default=8,
        help="overlay PNGs: half the highest-scoring bleed slices, half the highest-scoring healthy ones",
    )


# Ranges of the settings above, checked by the CLI before any work (ichinpaint.params).
PARAM_RULES = {
    "canvas": p.at_least(8),
    "sizes": p.at_least(1),
    "ddim_steps": p.at_least(1),
    "start_fraction": p.between(0, 1, low_open=True),
    "jump_length": p.at_least(1),
    "jump_n_sample": p.at_least(1),
    "noise_levels": p.between(0, 1, low_open=True),
    "batch_size": p.at_least(1),
    "seed": p.SEED,
    "splits": p.one_of(("train", "val", "test")),
    "n_overlays": p.at_least(0),
    "gate_hu": p.between(-1100, 4000),
    "baseline_hu": p.between(-1100, 4000),
}


def check_args(args: argparse.Namespace) -> None:
    for name in ("gate_hu", "baseline_hu"):
        low, high = getattr(args, name)
        p.require(low < high, f"--{name} {low:g} {high:g}: LOW must be below HIGH")


def run(args: argparse.Namespace) -> str:
    from ichinpaint.detection.runner import (
        DetectSettings,
        pick_device,
        read_manifest,
        run_detection,
    )
    from ichinpaint.detection.strategies import Strategy
    from ichinpaint.model import load_inpainter

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
        sign=args.sign,
        hu_gate=args.hu_gate,
        gate_band=tuple(args.gate_hu),
        baseline_band=tuple(args.baseline_hu),
    )
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    manifest = read_manifest(args.slices, args.splits)
    if manifest.empty:
        raise ValueError(f"{args.slices}: no slices in splits {args.splits}")
    module = None
    if strategy.needs_model:
        module, _ = load_inpainter(args.model, device=pick_device(args.device))
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
        )
        write_csv(tmp / "scores.csv", result.scores)
    write_json(args.metrics, result.metrics)
    m = result.metrics
    return (
        f"{m['series']} series, {m['slices']} slices, {m['strategy_detail']}: "
        f"{m['forwards_per_slice']:.0f} UNet images/slice, {m['forwards_per_second']:.1f} img/s, "
        f"{m['seconds_per_series']:.1f} s/series on {m['device']}"
    )
