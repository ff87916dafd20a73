"""Detection speed: UNet images per series, images per second, seconds per series, TFLOP/s.

Work per series is counted for a 36-slice series at 256 px, for the study's grid
(sizes 8/16/32/64, 4 half-square shifts, 9 passes, DDIM50 from noise) and for the
default strategy (params.yaml `detect`), on the whole grid and with the passes that
hide no brain skipped (an ellipse brain phantom). Speed is measured through the
detection code's own UNet runner:

- CPU: the default model at its 64 px (measured), channels_last on and off; the study's
  model (mediffusion defaults at 256 px, 6 input channels, ~125 M params) from a couple
  of forwards, extrapolated to a whole series (labelled as such);
- CUDA (when present): the study's model in fp32 eager, bf16 autocast, pure bf16, and
  pure bf16 + channels_last + torch.compile.

FLOPs per forward come from ``torch.utils.flop_counter.FlopCounterMode`` on one image.
The end-to-end row runs ``detect_series`` (sampler + grid + maps) on a 14-slice 64 px
phantom series with the default params, as the pipeline does on the synthetic data.

    .venv/bin/python benchmarks/bench_detect.py [--seconds 5] [--skip-study-cpu]

With ``--quality`` it instead runs detector variants (QUALITY_CANDIDATES) through the
pipeline's own ``ichinpaint detect`` and ``ichinpaint evaluate`` on the pipeline's data
(after ``dvc repro``; the other options come from params.yaml) and prints slice AUROC/AP,
false-positive components per healthy series and by kind, pixel AUPRC, per-subtype
sensitivity and seconds per series: the figures docs/results.md tables.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from ichinpaint import model
from ichinpaint.detection.inputs import SeriesImages
from ichinpaint.detection.sampler import UNetRunner
from ichinpaint.detection.series import detect_series
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.detection.strategies import Repaint, Strategy
from ichinpaint.grid import plan_grid

ROOT = Path(__file__).resolve().parent.parent
STUDY_SPEC = model.InpainterSpec(
    img_size=256,
    model_channels=128,
    channel_mult=(1, 1, 2, 2, 4, 4),
    num_res_blocks=2,
    attention_resolutions=(8, 16, 32),
)
STUDY_STRATEGY = Repaint(ddim_steps=50)
STUDY_SIZES, STUDY_OFFSETS = (8, 16, 32, 64), True
SERIES_SLICES = 36


def default_detect_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["detect"]


def default_settings(params: dict) -> DetectSettings:
    """params.yaml's detect group as the stage gets it."""
    return DetectSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def default_strategy(params: dict) -> Strategy:
    return default_settings(params).sampling()


def ellipse_brain(img_size: int) -> np.ndarray:
    """A brain-shaped ellipse (about 55 % of the image), like a mid-level axial slice."""
    yy, xx = np.mgrid[:img_size, :img_size] / img_size
    return ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.36) ** 2 <= 1


def patterns_per_slice(img_size: int, sizes_at_256, offsets: bool) -> tuple[int, int]:
    """(all grid patterns, patterns that hide some brain) for one phantom slice."""
    sizes = model.scaled_sizes(sizes_at_256, img_size)
    brain = ellipse_brain(img_size)[None].astype(np.float32)
    plan = plan_grid(brain, sizes, offsets)
    return len(plan.passes), len(plan.items)


def per_image_calls(strategy: Strategy, module) -> int:
    sampler = strategy.sampler(module.diffusion, UNetRunner(module), model.spec_of(module))
    return strategy.forwards_per_image(sampler)


def flops_per_forward(module) -> float:
    img = module.config.model.input_size
    x = torch.zeros(1, 1, img, img, device=module.device)
    c = torch.zeros(1, len(model.CONDITIONING), img, img, device=module.device)
    t = torch.full((1,), 500, device=module.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.unet_forward(module, x, t, c)
    return float(counter.get_total_flops())


def images_per_second(runner: UNetRunner, img: int, batch: int, seconds: float, min_calls=2):
    """Steady-state UNet images/s at `batch` (one warm-up call first)."""
    device = runner.device
    x = torch.randn(batch, 1, img, img, device=device)
    c = torch.randn(batch, len(model.CONDITIONING), img, img, device=device)
    t = torch.full((batch,), 500, device=device)
    with torch.inference_mode():
        runner(x, t, c)
        sync(device)
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < seconds:
            runner(x, t, c)
            calls += 1
        sync(device)
        return calls * batch / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def work_table(study_calls: int, default: Strategy, default_calls: int, params: dict) -> dict:
    rows, work = [], {}
    for name, sizes, offsets, calls, img in (
        ("study grid, DDIM50 repaint", STUDY_SIZES, STUDY_OFFSETS, study_calls, 256),
        (f"default: {default.describe()}", params["sizes"], params["offsets"], default_calls, 256),
        (f"default: {default.describe()}", params["sizes"], params["offsets"], default_calls, 64),
    ):
        everything, touching = patterns_per_slice(img, sizes, offsets)
        full = SERIES_SLICES * everything * calls
        skipped = SERIES_SLICES * touching * calls
        work[(name, img)] = skipped
        rows.append((name, img, everything, touching, calls, full, skipped))
    print(f"\nUNet images per {SERIES_SLICES}-slice series")
    print(f"{'grid / strategy':44} {'px':>4} {'patterns':>8} {'in brain':>8} {'calls':>5} "
          f"{'images (all)':>12} {'images (brain)':>14}")  # fmt: skip
    for name, img, everything, touching, calls, full, skipped in rows:
        print(
            f"{name:44} {img:>4} {everything:>8} {touching:>8} {calls:>5} {full:>12,} {skipped:>14,}"
        )
    return work


def speed_row(label, runner, img, batch, seconds, flops, work_study, work_default, note=""):
    rate = images_per_second(runner, img, batch, seconds)
    tflops = rate * flops / 1e12
    print(
        f"{label:46} {batch:>5} {rate:>9.{1 if rate >= 10 else 3}f} {flops / 1e9:>8.1f} {tflops:>8.3f} "
        f"{work_study / rate:>12,.0f} {work_default / rate:>11,.1f}  {note}"
    )
    return rate


def speed_header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'model / mode':46} {'batch':>5} {'img/s':>9} {'GFLOP/f':>8} {'TFLOP/s':>8} "
          f"{'s/series study':>12} {'s/series def':>11}")  # fmt: skip


def end_to_end(module, params: dict, n_slices: int = 14) -> None:
    """detect_series on a phantom series with the default params (sampler + grid + maps)."""
    img = module.config.model.input_size
    brain = ellipse_brain(img).astype(np.float32)
    rng = np.random.default_rng(0)
    image = np.where(brain > 0, 0.1, -1) + rng.normal(0, 0.05, (n_slices, img, img))
    image = image.astype(np.float32)
    images = SeriesImages(
        image, np.repeat(brain[None], n_slices, 0), image, image, list(range(n_slices))
    )
    settings = default_settings(params)
    runner = UNetRunner(module)
    sampler = settings.sampling().sampler(module.diffusion, runner, model.spec_of(module))
    start = time.perf_counter()
    detect_series(images, sampler, settings, torch.Generator(module.device).manual_seed(0))
    seconds = time.perf_counter() - start
    print(
        f"\nend to end (detect_series, default params, {n_slices} slices at {img} px, "
        f"{module.device.type}): {runner.forwards} UNet images, {seconds:.1f} s/series, "
        f"{runner.forwards / seconds:.1f} img/s, {runner.forwards / n_slices:.0f} images/slice"
    )


# --quality: detector variants run through the pipeline's own commands (detect, then
# evaluate) on the pipeline's data, so every number is what `dvc exp run -S ...` gives.
# name -> (extra `ichinpaint detect` options, extra `ichinpaint evaluate` options).
QUALITY_CANDIDATES: dict[str, tuple[list[str], list[str]]] = {
    "hu_threshold": (["--strategy", "hu_threshold"], []),
    "hu_threshold + location": (["--strategy", "hu_threshold"], ["--normalize", "location"]),
    "onestep |diff|": (["--strategy", "onestep", "--sign", "absolute", "--no-hu_gate"], []),
    "onestep |diff| + location": (
        ["--strategy", "onestep", "--sign", "absolute", "--no-hu_gate"],
        ["--normalize", "location"],
    ),
    "onestep positive + gate": (["--strategy", "onestep", "--sign", "positive", "--hu_gate"], []),
    "onestep positive + gate + location": (
        ["--strategy", "onestep", "--sign", "positive", "--hu_gate"],
        ["--normalize", "location"],
    ),
}
QUALITY_KEYS = ("slice_auroc", "slice_ap", "fp_components_per_healthy_series", "pixel_auprc")


def stage_args(group: dict) -> list[str]:
    """A params.yaml group as command-line options, the way dvc.yaml unpacks it."""
    argv = []
    for key, value in group.items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def quality_table(names: list[str], out_root: Path) -> None:
    """Run each candidate through detect + evaluate and print one row per candidate."""
    import json

    from ichinpaint import cli
    from ichinpaint.constants import SUBTYPES
    from ichinpaint.evaluation.truth import FP_KINDS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    canvas, img_size = str(params["png"]["canvas"]), str(params["png"]["img_size"])
    rows, detected = [], {}
    for name in names:
        detect_extra, evaluate_extra = QUALITY_CANDIDATES[name]
        key = tuple(detect_extra)
        det = out_root / f"detect_{len(detected)}" if key not in detected else detected[key]
        if key not in detected:
            detected[key] = det
            argv = ["detect", *stage_args(params["detect"]), *detect_extra, "--canvas", canvas]
            argv += ["--out", str(det / "maps"), "--metrics", str(det / "detect.json")]
            assert cli.main(argv) == 0
        ev = out_root / f"evaluate_{len(rows)}"
        argv = ["evaluate", *stage_args(params["evaluate"]), *evaluate_extra]
        argv += ["--canvas", canvas, "--img_size", img_size, "--detections", str(det / "maps")]
        argv += ["--detect_metrics", str(det / "detect.json"), "--metrics", str(ev / "m.json")]
        argv += ["--plots", str(ev / "plots"), "--gallery", str(ev / "gallery")]
        argv += ["--submission", str(ev / "submission.csv")]
        argv += ["--ground_truth", str(ROOT / params["data"]["raw_dir"] / "ground_truth")]
        assert cli.main(argv) == 0
        rows.append((name, json.loads((ev / "m.json").read_text())))
    head = [
        "slice AUROC",
        "AP",
        "FP/healthy",
        "pixel AUPRC",
        *(s[:6] for s in SUBTYPES),
        "s/series",
    ]
    print("\n| candidate | " + " | ".join(head) + " | FP by kind (per healthy series) |")
    print("|---" * (len(head) + 2) + "|")
    for name, m in rows:
        values = [m.get(k) for k in QUALITY_KEYS]
        values += [m.get(f"sensitivity_{s}") for s in SUBTYPES] + [m.get("seconds_per_series")]
        kinds = {k: m.get(f"fp_components_{k}") or 0 for k in FP_KINDS}
        top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items(), key=lambda i: -i[1]) if v)
        cells = ["n/a" if v is None else f"{v:.2f}" for v in values]
        print(f"| {name} | " + " | ".join(cells) + f" | {top or '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--skip-study-cpu", action="store_true", help="skip the (slow) study model on CPU"
    )
    parser.add_argument(
        "--quality",
        action="store_true",
        help="compare detector variants on the pipeline's data (run from the repo root after "
        "dvc repro): detect + evaluate per candidate, a table of slice AUROC, per-subtype "
        "sensitivity, FP components by kind, pixel AUPRC and speed",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/ichinpaint-quality"), help="--quality: work dir"
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=list(QUALITY_CANDIDATES),
        choices=list(QUALITY_CANDIDATES),
        metavar="NAME",
        help="--quality: candidates to run (default: all)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.quality:
        quality_table(args.candidates, args.out)
        return
    params = default_detect_params()
    default = default_strategy(params)
    small = model.build_module(model.InpainterSpec()).eval()
    study_calls = per_image_calls(STUDY_STRATEGY, small)
    default_calls = per_image_calls(default, small)
    work = work_table(study_calls, default, default_calls, params)
    study_work = work[("study grid, DDIM50 repaint", 256)]
    default_256 = work[(f"default: {default.describe()}", 256)]
    default_64 = work[(f"default: {default.describe()}", 64)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    speed_header(
        f"CPU ({torch.get_num_threads()} threads, load average {load:.1f}); "
        "s/series for the study grid and the default grid at the model's size"
    )
    flops_small = flops_per_forward(small)
    for channels_last in (False, True):
        runner = UNetRunner(
            model.build_module(model.InpainterSpec()).eval(), channels_last=channels_last
        )
        speed_row(
            f"default model 64 px fp32{' channels_last' if channels_last else ''}",
            runner, 64, int(params["batch_size"]), args.seconds, flops_small,
            patterns_scaled(study_work, 64), default_64, "measured",
        )  # fmt: skip
    end_to_end(small, params)
    if not args.skip_study_cpu:
        study = model.build_module(STUDY_SPEC).eval()
        n_params = sum(p.numel() for p in study.model.parameters()) / 1e6
        flops_study = flops_per_forward(study)
        runner = UNetRunner(study, channels_last=True)
        speed_row(
            f"study model {n_params:.0f} M 256 px fp32 channels_last",
            runner, 256, 1, 0.0, flops_study, study_work, default_256,
            "EXTRAPOLATED from 2 forwards",
        )  # fmt: skip
        del study, runner
    if torch.cuda.is_available():
        cuda_rows(args.seconds, study_work, default_256)
    else:
        print("\nCUDA: not available here; run this script on a GPU machine for the CUDA rows")


def patterns_scaled(study_work_256: int, img: int) -> int:
    """The study grid's images per series at `img` px (square sizes scaled, brain phantom)."""
    _, touching = patterns_per_slice(img, STUDY_SIZES, STUDY_OFFSETS)
    _, touching_256 = patterns_per_slice(256, STUDY_SIZES, STUDY_OFFSETS)
    return study_work_256 * touching // touching_256


def cuda_rows(seconds: float, study_work: int, default_work: int) -> None:
    device = torch.device("cuda")
    speed_header(f"CUDA {torch.cuda.get_device_name(device)}: study model 256 px")
    flops = None
    for label, precision, channels_last, compile, batch in (
        ("fp32 eager", "fp32", False, False, 64),
        ("bf16 autocast", "bf16-autocast", False, False, 256),
        ("bf16", "bf16", False, False, 256),
        ("bf16 + channels_last + compile", "bf16", True, True, 256),
    ):
        study = model.build_module(STUDY_SPEC).eval().to(device)
        flops = flops or flops_per_forward(study)
        runner = UNetRunner(
            study, precision=precision, channels_last=channels_last, compile=compile
        )
        speed_row(label, runner, 256, batch, seconds, flops, study_work, default_work, "measured")
        del study, runner
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
