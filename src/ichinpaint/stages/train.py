"""Train the conditional inpainting diffusion model on healthy training slices.

Reads the png stage's manifest (split == train, use == True; validation on split ==
val), augments with the albumentations pipeline at --transforms, hides squares of the
detection sizes (random ones inside the brain, or one pass of the detection grid) and
trains mediffusion's DiffusionModule with Lightning, tracked by DVCLive. Writes the EMA
weights to --out (plain tensors, safe to load) with the model spec beside it (.json),
metrics/reports/train.json (its headline: metrics/train.json), and a resume checkpoint
in --state_dir: a killed run continues from it and reaches the same number of images
seen. See docs/training.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint import params as rules
from ichinpaint.training.loop import TrainConfig, TrainPaths, train

# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"val_loss": "val_loss"}


# The stage's settings, declared once: its options and ranges are made from it.
SETTINGS = TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--slices", default="data/processed/slices.csv", help="png stage manifest")
    io.add_argument("--root", default=".", help="directory the manifest's paths are relative to")
    io.add_argument(
        "--out",
        default="models/inpainter.ckpt",
        help="EMA weights; the spec is written beside (.json)",
    )
    io.add_argument(
        "--state_dir",
        default="models/train_state",
        help="resume checkpoint (persisted between runs)",
    )
    io.add_argument(
        "--live_dir",
        default="dvclive/train",
        help="DVCLive directory (plots, images, params); '' = no DVCLive, a CSV log in --state_dir",
    )
    io.add_argument(
        "--metrics", default="metrics/reports/train.json", help="final losses, images seen, speed"
    )
    rules.add_options(parser.add_argument_group("train params (params.yaml: train)"), TrainConfig)


PARAM_RULES = rules.rules_of(TrainConfig)


def check_args(args: argparse.Namespace) -> None:
    levels = 2 ** (len(args.channel_mult) - 1)
    rules.require(
        args.img_size % levels == 0,
        f"--img_size {args.img_size} must be divisible by {levels} "
        f"(the UNet halves it {len(args.channel_mult) - 1} times, --channel_mult {args.channel_mult})",
    )


def run(args: argparse.Namespace) -> str:
    cfg = rules.from_args(TrainConfig, args)
    paths = TrainPaths(
        slices=Path(args.slices),
        out=Path(args.out),
        state_dir=Path(args.state_dir),
        live_dir=Path(args.live_dir) if args.live_dir else None,
        metrics=Path(args.metrics),
        root=Path(args.root),
    )
    m = train(cfg, paths)
    if not m:
        return "non-zero rank: done"
    resumed = f", resumed at step {m['resumed_from_step']}" if m["resumed_from_step"] else ""
    return (
        f"{m['images_seen']} images in {m['steps']} steps{resumed}: train loss {m['train_loss']:.4f}, "
        f"val loss {m['val_loss']:.4f}, {m['images_per_s']:.1f} images/s on {m['device']} -> {paths.out}"
    )
