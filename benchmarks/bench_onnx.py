"""UNet speed on the CPU: torch eager vs onnxruntime (the ``detect.backend`` choice).

For the default model (params.yaml `train`: 64 px) and a mid-size one (channels 64 at
128 px), both untrained (speed does not depend on the weights): images per second
through each backend at a few batch sizes, and the largest |difference| between them.
Torch runs with channels_last as detection does; onnxruntime with its CPU provider.
Both use every thread torch is given (``torch.get_num_threads()``).

    .venv/bin/python benchmarks/bench_onnx.py [--seconds 3] [--batches 1 8 64] [--study]

``--study`` adds the study's 125 M-parameter model at 256 px (export and parity
included; a few minutes on a CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from bench_detect import STUDY_SPEC  # the study's model: one declaration for every benchmark

from ichinpaint import model
from ichinpaint.onnxunet import OnnxUNet, example_inputs, export_unet

ROOT = Path(__file__).resolve().parent.parent


def default_spec() -> model.InpainterSpec:
    train = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    return model.InpainterSpec(
        img_size=train["img_size"],
        model_channels=train["model_channels"],
        channel_mult=tuple(train["channel_mult"]),
        num_res_blocks=train["num_res_blocks"],
        attention_resolutions=tuple(train["attention_resolutions"]),
    )


MID_SPEC = model.InpainterSpec(
    img_size=128, model_channels=64, channel_mult=(1, 2, 2, 4), attention_resolutions=(8,)
)


def images_per_second(call, inputs, seconds: float) -> float:
    call(*inputs)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(*inputs)
        n += inputs[0].shape[0]
    return n / (time.perf_counter() - start)


def bench(name: str, spec: model.InpainterSpec, batches: list[int], seconds: float) -> list[str]:
    torch.manual_seed(0)
    module = model.build_module(spec).eval()
    with torch.no_grad():  # untrained output layers are zero: perturb so the outputs differ
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    unet = module.model
    n_params = sum(p.numel() for p in unet.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet.onnx"
        export_unet(module, path)
        ort_unet = OnnxUNet(path, threads=torch.get_num_threads())
        unet_cl = unet.to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def torch_call(x, t, c):
            x = x.contiguous(memory_format=torch.channels_last)
            c = c.contiguous(memory_format=torch.channels_last)
            return unet_cl(x, t, concat=c)

        rows = []
        for batch in batches:
            inputs = example_inputs(spec.img_size, len(model.CONDITIONING), batch)
            diff = float((torch_call(*inputs) - ort_unet(*inputs)).abs().max())
            t_speed = images_per_second(torch_call, inputs, seconds)
            o_speed = images_per_second(ort_unet, inputs, seconds)
            rows.append(
                f"| {name} ({n_params:.1f} M, {spec.img_size} px) | {batch} | {t_speed:.3g} | "
                f"{o_speed:.3g} | {o_speed / t_speed:.2f} | {diff:.1e} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per cell")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--skip-mid", action="store_true", help="only the default model")
    parser.add_argument(
        "--study", action="store_true", help="also the study's 125 M model at batch 1 (minutes)"
    )
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | batch | torch img/s | onnxruntime img/s | ort / torch | max abs diff |")
    print("|---|---|---|---|---|---|")
    for row in bench("default", default_spec(), args.batches, args.seconds):
        print(row, flush=True)
    if not args.skip_mid:
        for row in bench("mid", MID_SPEC, [b for b in args.batches if b <= 8] or [1], args.seconds):
            print(row, flush=True)
    if args.study:
        for row in bench("study", STUDY_SPEC, [1], args.seconds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
