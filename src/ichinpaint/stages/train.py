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
from ichinpaint.model import NEIGHBOURS
from ichinpaint.training.loop import TrainConfig, TrainPaths, train

DEFAULTS = TrainConfig()


# What `dvc metrics show` prints (--headline, see ichinpaint.cli); the rest of the
# --metrics report is an ordinary output.
HEADLINE = {"val_loss": "val_loss"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
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
        "--live_dir", default="dvclive/train", help="DVCLive directory (plots, images, params)"
    )
    io.add_argument(
        "--metrics", default="metrics/reports/train.json", help="final losses, images seen, speed"
    )

    p = parser.add_argument_group("train params (params.yaml: train)")
    p.add_argument(
        "--transforms",
        default="transforms/train.json",
        help="albumentations pipeline (A.save JSON)",
    )
    p.add_argument(
        "--img_size",
        type=int,
        default=d.img_size,
        help="square image size; must match the png stage",
    )
    p.add_argument(
        "--total_image_seen", type=int, default=d.total_image_seen, help="training length in images"
    )
    p.add_argument(
        "--batch_size", type=int, default=d.batch_size, help="images per device per micro-batch"
    )
    p.add_argument(
        "--accumulate_grad_batches",
        type=int,
        default=d.accumulate_grad_batches,
        help="micro-batches per step",
    )
    p.add_argument(
        "--num_devices", type=int, default=d.num_devices, help="devices per node (DDP when > 1)"
    )
    p.add_argument(
        "--num_nodes", type=int, default=d.num_nodes, help="nodes (DDP, launched by torchrun/SLURM)"
    )
    p.add_argument(
        "--precision",
        default=d.precision,
        help='Lightning precision: "32" on CPU, "bf16-mixed" on GPU',
    )
    p.add_argument(
        "--lr", type=float, default=d.lr, help="peak AdamW learning rate (warm-up, then cosine)"
    )
    p.add_argument(
        "--ema_decay",
        type=float,
        default=d.ema_decay,
        help="EMA decay ceiling (warmed up from 0.1)",
    )
    p.add_argument(
        "--model_channels",
        type=int,
        default=d.model_channels,
        help="UNet base channels (multiple of 32)",
    )
    p.add_argument(
        "--channel_mult",
        type=int,
        nargs="+",
        default=list(d.channel_mult),
        help="per-level channel multipliers",
    )
    p.add_argument(
        "--attention_resolutions",
        type=int,
        nargs="*",
        default=list(d.attention_resolutions),
        help="downsampling factors with self-attention",
    )
    p.add_argument(
        "--num_res_blocks", type=int, default=d.num_res_blocks, help="residual blocks per level"
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(d.sizes),
        help="square sizes at 256 px (scaled to img_size)",
    )
    p.add_argument(
        "--grid_fraction",
        type=float,
        default=d.grid_fraction,
        help="share of masks that are a detection-grid pass",
    )
    p.add_argument(
        "--neighbours",
        choices=NEIGHBOURS,
        default=d.neighbours,
        help="how the slices above and below are shown: keep (whole), hide (blanked under "
        "the inpainting mask, so a bleed spanning slices cannot leak), none; "
        "written into the model spec, detection follows it",
    )
    p.add_argument(
        "--val_every",
        type=int,
        default=d.val_every,
        help="validate every this many training images",
    )
    p.add_argument(
        "--val_images",
        type=int,
        default=d.val_images,
        help="validation slices used (spread over the split)",
    )
    p.add_argument(
        "--checkpoint_every",
        type=int,
        default=d.checkpoint_every,
        help="resume checkpoint every this many images",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument(
        "--num_workers",
        type=int,
        default=d.num_workers,
        help="dataloader worker processes (0 = in process)",
    )
    p.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=d.channels_last,
        help="channels-last memory format (faster convolutions on CPU and GPU)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d.compile,
        help="torch.compile the UNet",
    )


# Ranges of the settings above, checked by the CLI before any work (ichinpaint.params).
PARAM_RULES = {
    "img_size": rules.at_least(8),
    "total_image_seen": rules.at_least(1),
    "batch_size": rules.at_least(1),
    "accumulate_grad_batches": rules.at_least(1),
    "num_devices": rules.at_least(1),
    "num_nodes": rules.at_least(1),
    "precision": rules.one_of(("32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64")),
    "lr": rules.greater_than(0),
    "ema_decay": rules.between(0, 1, high_open=True),
    "model_channels": rules.multiple_of(32, 32),  # GroupNorm32
    "channel_mult": rules.at_least(1),
    "attention_resolutions": rules.maybe_empty(rules.at_least(1)),
    "num_res_blocks": rules.at_least(1),
    "sizes": rules.at_least(1),
    "grid_fraction": rules.between(0, 1),
    "val_every": rules.at_least(1),
    "val_images": rules.at_least(1),
    "checkpoint_every": rules.at_least(1),
    "seed": rules.SEED,
    "num_workers": rules.at_least(0),
}


def check_args(args: argparse.Namespace) -> None:
    levels = 2 ** (len(args.channel_mult) - 1)
    rules.require(
        args.img_size % levels == 0,
        f"--img_size {args.img_size} must be divisible by {levels} "
        f"(the UNet halves it {len(args.channel_mult) - 1} times, --channel_mult {args.channel_mult})",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    values = {k: v for k, v in vars(args).items() if k in names}
    for key in ("channel_mult", "attention_resolutions", "sizes"):
        values[key] = tuple(values[key])
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> str:
    cfg = config_from_args(args)
    paths = TrainPaths(
        slices=Path(args.slices),
        transforms=Path(args.transforms),
        out=Path(args.out),
        state_dir=Path(args.state_dir),
        live_dir=Path(args.live_dir),
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
