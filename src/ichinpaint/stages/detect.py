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

Resumable and shardable by series: each finished series is kept in --work
(<uid>.nii.gz, .csv, .json with a fingerprint of the settings, model and inputs), so a
re-run skips finished series. `--num_parts K --part_id i` (or torchrun's ranks) computes
one part of the series and stops; the run without parts (or `--merge_only`) computes what
is left and merges everything into --out, refusing missing or duplicated series.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ichinpaint import params as p
from ichinpaint.fastattention import ATTENTION_CHOICES
from ichinpaint.io import atomic_dir, write_csv, write_json

STRATEGY_CHOICES = ("repaint", "partial", "onestep", "hu_threshold")
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
        default="positive",
        choices=("absolute", "positive"),
        help="absolute: |real - re-painted|; positive: only where the real slice is brighter "
        "(blood is hyperdense; cysts, atrophy and old infarcts are not)",
    )
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="test-time augmentation: also re-paint the left-right mirrored slices and average "
        "the two maps (twice the UNet calls)",
    )
    parser.add_argument(
        "--hu_gate",
        action=argparse.BooleanOptionalAction,
        default=True,
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
        "--attention",
        default="einsum",
        choices=ATTENTION_CHOICES,
        help="einsum: mediffusion's attention; sdpa: torch's scaled_dot_product_attention "
        "(same result within rounding, faster on GPU)",
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

    # -- orchestration (not params: they change where and when, never the result) --
    parser.add_argument(
        "--work",
        nargs="+",
        default=[],
        help="series stores: a run writes finished series into the first; the merge reads "
        "all (several when nodes wrote separate folders). Default: <out>.parts",
    )
    parser.add_argument(
        "--num_parts", type=int, default=1, help="split the series into this many parts"
    )
    parser.add_argument(
        "--part_id",
        type=int,
        default=0,
        help="the part this process computes (0..num_parts-1); with num_parts > 1 it does not merge",
    )
    parser.add_argument(
        "--merge_only",
        action="store_true",
        help="compute nothing: merge the stores into --out, refusing missing or duplicated series",
    )
    parser.add_argument(
        "--dist_timeout_h",
        type=float,
        default=72.0,
        help="torchrun: hours rank 0 waits for the other ranks before merging",
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
    "work": p.maybe_empty(p.Rule(lambda v: bool(str(v).strip()), "a folder path")),
    "num_parts": p.at_least(1),
    "part_id": p.at_least(0),
    "dist_timeout_h": p.greater_than(0),
    "gate_hu": p.between(-1100, 4000),
    "baseline_hu": p.between(-1100, 4000),
}


def check_args(args: argparse.Namespace) -> None:
    p.require(
        args.part_id < args.num_parts,
        f"--part_id {args.part_id} must be below --num_parts {args.num_parts}",
    )
    for name in ("gate_hu", "baseline_hu"):
        low, high = getattr(args, name)
        p.require(low < high, f"--{name} {low:g} {high:g}: LOW must be below HIGH")


def build_settings(args: argparse.Namespace):
    from ichinpaint.detection.runner import DetectSettings
    from ichinpaint.detection.strategies import Strategy

    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    strategy = Strategy(
        name=args.strategy,
        ddim_steps=args.ddim_steps,
        start_fraction=args.start_fraction,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        noise_levels=tuple(args.noise_levels),
    )
    return DetectSettings(
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
        mirror=args.mirror,
    )


def result_params(args: argparse.Namespace, settings) -> dict:
    """The params that define a series' result (with the model and the inputs)."""
    import dataclasses

    return {"settings": dataclasses.asdict(settings), "canvas": args.canvas if args.nifti else None}


def numerics(args: argparse.Namespace, device) -> str:
    """How the numbers were computed: same result up to rounding, but never mixed in one run."""
    import json

    on_cuda = device.type == "cuda"
    return json.dumps(
        {
            "device_type": device.type,
            "bf16": bool(args.bf16 and on_cuda),  # the CPU always runs float32
            "channels_last": args.channels_last,
            "compile": args.compile,
            "attention": args.attention,
            "backend": args.backend,
        },
        sort_keys=True,
    )


def store_dirs(args: argparse.Namespace) -> list[Path]:
    out = Path(args.out)
    return [Path(p) for p in args.work] or [out.with_name(f"{out.name}.parts")]


def run(args: argparse.Namespace) -> str:
    import json

    from ichinpaint.detection import shards
    from ichinpaint.detection.runner import (
        manifest_png_size,
        pick_device,
        read_manifest,
        run_part,
        series_fingerprints,
    )
    from ichinpaint.fastattention import use_attention
    from ichinpaint.model import InpainterSpec, config_path_for, load_inpainter
    from ichinpaint.onnxunet import onnx_net, onnx_path_for

    settings = build_settings(args)
    part = shards.resolve_part(args.num_parts, args.part_id)
    manifest = read_manifest(args.slices, args.splits)
    if manifest.empty:
        raise ValueError(f"{args.slices}: no slices in splits {args.splits}")
    device = pick_device("cpu" if args.backend == "onnxruntime" else args.device)
    if part.torchrun and device.type == "cuda" and device.index is None:
        device = torch_device(f"cuda:{part.local_rank % cuda_device_count()}")
    root = Path(args.root)
    if settings.strategy.needs_model:
        model_files = [Path(args.model), config_path_for(args.model)]
        for path in model_files:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no model (run `dvc repro train`)")
        img_size = InpainterSpec.from_dict(json.loads(model_files[1].read_text())["spec"]).img_size
    else:  # the HU baseline reads no model: its result does not depend on one
        model_files = []
        img_size = manifest_png_size(manifest, root)
    run_fp = shards.run_fingerprint(result_params(args, settings), model_files)
    nifti_dir = Path(args.nifti) if args.nifti else None
    stores = [shards.SeriesStore(p) for p in store_dirs(args)]
    all_uids = sorted(manifest["series_uid"].unique())
    mine = [] if args.merge_only else shards.select_part(all_uids, part.num_parts, part.part_id)
    context = {
        "root": root,
        "nifti_dir": nifti_dir,
        "canvas": args.canvas,
        "img_size": img_size,
        "reads_hu": settings.needs_hu,
    }
    done, prints = None, None
    if mine:
        stores[0].clean_temporaries(None if part.num_parts == 1 else mine)
        prints = series_fingerprints(manifest, mine, run_fp, **context)

        def load_module():
            module, _ = load_inpainter(args.model, device=device)
            use_attention(module.model, args.attention)
            return module

        net = onnx_net(onnx_path_for(args.model)) if args.backend == "onnxruntime" else None

        done = run_part(
            manifest, load_module, settings, store=stores[0], fingerprints=prints,
            run_fp=run_fp, numerics=numerics(args, device), root=root, nifti_dir=nifti_dir, canvas=args.canvas,
            bf16=args.bf16, channels_last=args.channels_last, compile=args.compile,
            part_label=part.label, net=net,
        )  # fmt: skip
    part_summary = (
        f"part {part.label}: {len(done.computed)} series computed, {len(done.reused)} already done"
        if done
        else "merge only"
    )
    if part.torchrun:
        wait_for_all_ranks(args.dist_timeout_h)
    merges = args.merge_only or part.num_parts == 1 or (part.torchrun and part.part_id == 0)
    if not merges:
        return f"{part_summary} in {stores[0].root} (merge: the same command without parts)"
    known = prints if mine == all_uids else None
    return merge(args, manifest, stores, run_fp, settings, context, part_summary, known)


def merge(args, manifest, stores, run_fp, settings, context, part_summary, known=None) -> str:
    """Build --out and the metrics from the stores; `known` = fingerprints already computed."""
    from ichinpaint.detection import shards
    from ichinpaint.detection.record import file_sha256, settings_record
    from ichinpaint.detection.runner import merge_detections, series_fingerprints

    shards.clean_stale_outputs(args.out)
    all_uids = sorted(manifest["series_uid"].unique())
    expected = known or series_fingerprints(manifest, all_uids, run_fp, **context)
    located = shards.locate_series(stores, expected)
    with atomic_dir(args.out) as tmp:
        result = merge_detections(
            manifest, located, settings, out_dir=tmp, root=context["root"],
            n_overlays=args.n_overlays,
        )  # fmt: skip
        write_csv(tmp / "scores.csv", result.scores)
        # What decides the maps, for evaluate's decision artifact (predict reruns it).
        record = settings_record(
            settings,
            canvas=args.canvas,
            img_size=context["img_size"],
            model_sha256=file_sha256(args.model) if settings.strategy.needs_model else "",
        )
        write_json(tmp / "settings.json", record)
    write_json(args.metrics, result.metrics)
    m = result.metrics
    return (
        f"{part_summary}; {m['series']} series, {m['slices']} slices, {m['strategy_detail']}: "
        f"{m['forwards_per_slice']:.0f} UNet images/slice, {m['forwards_per_second']:.1f} img/s, "
        f"{m['seconds_per_series']:.1f} s/series on {m['device']}"
    )


def torch_device(name: str):
    import torch

    return torch.device(name)


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def wait_for_all_ranks(timeout_h: float) -> None:
    """torchrun: every rank has written its part; rank 0 merges after this barrier.

    gloo, whatever the device: the only collective is this barrier, and parts can finish
    hours apart, hence the long timeout.
    """
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=timeout_h))
    dist.barrier()
    dist.destroy_process_group()
