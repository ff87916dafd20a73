"""Training throughput (images/s) of the inpainting model, printed as a table.

A "step" is what the train stage does per batch: sample timesteps and noise, the
mediffusion loss (UNet forward with the 5 conditioning channels), backward and an AdamW
step. Data loading is excluded (it is not the bottleneck: PNGs are tiny).

On CPU it measures the default model of params.yaml (64 px, channels 32, mult 1 2 2)
with and without channels_last. On CUDA it also measures the study's 256 px model
(mediffusion defaults: channels 128, mult 1 1 2 2 4 4, attention at 8 16 32, 2 res
blocks) in fp32 and bf16 autocast, with and without channels_last and torch.compile.

    python benchmarks/bench_train.py                 # what this machine can run
    python benchmarks/bench_train.py --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from bench_detect import STUDY_SPEC  # the study's model: one declaration for every benchmark

from ichinpaint import model

DEFAULT = model.InpainterSpec(
    img_size=64, model_channels=32, channel_mult=(1, 2, 2), attention_resolutions=(8,)
)


@dataclasses.dataclass
class Case:
    name: str
    spec: model.InpainterSpec
    batch: int
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


def cases(device: str, batch_cpu: int, batch_gpu: int) -> list[Case]:
    out = [
        Case("default 64px fp32", DEFAULT, batch_cpu),
        Case("default 64px fp32 channels_last", DEFAULT, batch_cpu, channels_last=True),
    ]
    if device == "cuda":
        for bf16 in (False, True):
            for cl in (False, True):
                for comp in (False, True):
                    label = f"study 256px {'bf16' if bf16 else 'fp32'}{' channels_last' if cl else ''}{' compile' if comp else ''}"
                    out.append(
                        Case(
                            label, STUDY_SPEC, batch_gpu, bf16=bf16, channels_last=cl, compile=comp
                        )
                    )
    return out


def measure(case: Case, device: str, warmup: int, steps: int) -> dict[str, float]:
    """Images/s of full training steps for one case."""
    torch.manual_seed(0)
    module = model.build_module(case.spec).to(device).train()
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    module.model.to(memory_format=fmt)
    net = torch.compile(module.model) if case.compile else module.model
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    size = case.spec.img_size
    x = torch.randn(case.batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    concat = torch.randn(case.batch, len(model.CONDITIONING), size, size, device=device).contiguous(
        memory_format=fmt
    )

    def step() -> None:
        t, _ = module.timestep_scheduler.sample(batch_size=case.batch, device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=case.bf16):
            loss = module.diffusion.training_losses(
                model=net,
                x_start=x,
                t=t,
                noise=torch.randn_like(x),
                model_kwargs={"concat": concat, "cls": None},
            )["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"images_per_s": case.batch / seconds, "ms_per_step": seconds * 1000, "gib": memory}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch_cpu", type=int, default=16, help="batch of the default model (train.batch_size)"
    )
    parser.add_argument("--batch_gpu", type=int, default=32, help="batch of the study model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'case':<44} {'batch':>5} {'images/s':>9} {'ms/step':>9} {'GiB':>6}")
    for case in cases(args.device, args.batch_cpu, args.batch_gpu):
        if args.only and args.only not in case.name:
            continue
        warmup = args.warmup + (3 if case.compile else 0)
        r = measure(case, args.device, warmup, args.steps)
        print(
            f"{case.name:<44} {case.batch:>5} {r['images_per_s']:>9.1f} {r['ms_per_step']:>9.1f} {r['gib']:>6.1f}"
        )


if __name__ == "__main__":
    main()
