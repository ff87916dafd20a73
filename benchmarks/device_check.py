"""The prepared GPU check: training and detection speed of the study's model, and DDP smokes.

Started by ``benchmarks/device_check.sh`` (which makes the environment); prints ONE
markdown table (and writes it to ``--out`` when given):

- training images/s of the study's 256 px model (mediffusion's default UNet; our
  contract gives it 6 input channels: image + 5 conditioning) in fp32 eager, bf16 +
  channels_last, and bf16 + channels_last + SDPA attention + torch.compile, each with
  AdamW (fused on CUDA) and the EMA updated on the device every step;
- detection UNet forwards/s and TFLOP/s in fp32, bf16, bf16 + channels_last + SDPA,
  and bf16 + channels_last + SDPA + torch.compile (``--compile_mode``: default, reduce-overhead =
  CUDA graphs, max-autotune);
- projected seconds per 36-slice series for the study's grid (4 sizes x 4 half-offsets
  x 9 passes, DDIM50 repaint, passes hiding no brain skipped) and for the default
  detector (params.yaml ``detect``), at the best measured rate;
- smokes: 2-process DDP training (torchrun, gloo, both ranks on the one device) and
  sharded detection (``torchrun --nproc_per_node 2 -m ichinpaint.cli detect``), the
  latter compared with a single-process run.

Without CUDA it says so and runs the same rows on a tiny model on the CPU (compile rows
skipped), so the script is exercised everywhere (tests/test_device_check.py). Each row
checks the remaining ``--budget_s`` first and is skipped, with a note, when it is spent.

    python benchmarks/device_check.py [--budget_s 420] [--smoke all|none] [--out table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny PNG set of the training tests

import bench_detect as bd  # noqa: E402

from ichinpaint import model  # noqa: E402
from ichinpaint.detection.sampler import UNetRunner  # noqa: E402
from ichinpaint.fastattention import use_attention  # noqa: E402

TINY = model.InpainterSpec(
    img_size=32, model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,)
)


@dataclasses.dataclass
class Row:
    section: str
    mode: str
    batch: int | str = ""
    per_s: float | None = None
    tflops: float | None = None
    study_s: float | None = None
    default_s: float | None = None
    note: str = ""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()  # tensors of a failed row's frames
        torch.cuda.empty_cache()


# -- training ----------------------------------------------------------------------------


def train_rate(spec, device, *, batch, bf16, channels_last, sdpa, compile_mode, steps, warmup):
    """Images/s of whole training steps: loss, backward, AdamW, EMA update on the device."""
    torch.manual_seed(0)
    module = model.build_module(spec).to(device).train()
    if sdpa:
        use_attention(module.model, "sdpa")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module.model.to(memory_format=fmt)
    net = torch.compile(module.model, mode=compile_mode) if compile_mode else module.model
    params = [p for p in module.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda" or None)
    ema = [p.detach().clone() for p in params]
    size = spec.img_size
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    concat = torch.randn(batch, len(model.CONDITIONING), size, size, device=device)
    concat = concat.contiguous(memory_format=fmt)

    def step() -> None:
        t, _ = module.timestep_scheduler.sample(batch_size=batch, device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.diffusion.training_losses(
                model=net, x_start=x, t=t, noise=torch.randn_like(x),
                model_kwargs={"concat": concat, "cls": None},
            )["loss"].mean()  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 0.005)

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    rate = steps * batch / (time.perf_counter() - start)
    free(device)
    return rate


# -- detection ---------------------------------------------------------------------------


def detect_rate(spec, device, *, batch, precision, channels_last, sdpa, compile_mode, seconds):
    """UNet forwards/s through detection's own runner (the unit the grid counts)."""
    module = model.build_module(spec).eval().to(device)
    flops = bd.flops_per_forward(module)
    if sdpa:
        use_attention(module.model, "sdpa")
    runner = UNetRunner(module, precision=precision, channels_last=channels_last)
    if compile_mode:
        runner._net = torch.compile(module.model, mode=compile_mode)
    rate = bd.images_per_second(runner, spec.img_size, batch, seconds)
    del module, runner
    free(device)
    return rate, flops


def series_work(spec) -> tuple[int, int]:
    """UNet images per 36-slice series: the study's grid and the default detector, at 256 px."""
    params = bd.default_detect_params()
    counter = model.build_module(TINY)  # only the 1000-step schedule matters for counting
    study_calls = bd.per_image_calls(bd.STUDY_STRATEGY, counter)
    default_calls = bd.per_image_calls(bd.default_strategy(params), counter)
    img = spec.img_size
    _, study_patterns = bd.patterns_per_slice(img, bd.STUDY_SIZES, bd.STUDY_OFFSETS)
    _, default_patterns = bd.patterns_per_slice(img, params["sizes"], params["offsets"])
    return (
        bd.SERIES_SLICES * study_patterns * study_calls,
        bd.SERIES_SLICES * default_patterns * default_calls,
    )


# -- smokes ------------------------------------------------------------------------------


def ddp_worker() -> None:
    """One torchrun rank: DDP over gloo, tiny model, both ranks on the same device."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    module = model.build_module(TINY).to(device).train()
    net = DistributedDataParallel(module.model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    torch.manual_seed(100 + rank)  # different data per rank, as a sampler would give
    for _ in range(3):
        x = torch.randn(4, 1, TINY.img_size, TINY.img_size, device=device)
        concat = torch.randn(
            4, len(model.CONDITIONING), TINY.img_size, TINY.img_size, device=device
        )
        t, _ = module.timestep_scheduler.sample(batch_size=4, device=device)
        loss = module.diffusion.training_losses(
            model=net, x_start=x, t=t, noise=torch.randn_like(x),
            model_kwargs={"concat": concat, "cls": None},
        )["loss"].mean()  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    checksum = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().cpu()
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    if rank == 0:
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        print(f"DDP_CHECK weights identical across ranks after 3 steps: {same}", flush=True)
        if not same:
            sys.exit(1)
    dist.destroy_process_group()


def torchrun(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    return subprocess.run(
        command + args, env=env, capture_output=True, text=True, timeout=max(timeout, 10)
    )


def smoke_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def smoke_ddp_training(budget: Budget) -> Row:
    try:
        done = torchrun([str(Path(__file__)), "--ddp_worker"], smoke_env(), budget.left())
    except subprocess.TimeoutExpired:
        return Row("smoke", "DDP training, 2 ranks (gloo)", 2, note="FAILED: timed out")
    ok = (
        done.returncode == 0 and "weights identical across ranks after 3 steps: True" in done.stdout
    )
    note = "ok: weights identical across ranks" if ok else f"FAILED: {tail(done)}"
    return Row("smoke", "DDP training, 2 ranks (gloo)", 2, note=note)


def smoke_sharded_detection(budget: Budget, device: torch.device) -> Row:
    work = Path(tempfile.mkdtemp(prefix="device_check."))
    try:
        return sharded_detection(work, budget, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sharded_detection(work: Path, budget: Budget, device: torch.device) -> Row:
    from train_fixtures import write_png_set

    manifest = write_png_set(work, img_size=TINY.img_size, series={"train": 1, "val": 2, "test": 2})
    torch.manual_seed(0)
    module = model.build_module(TINY)
    model.save_inpainter(work / "m.ckpt", module.state_dict(), TINY)

    def detect_args(out: str) -> list[str]:
        return [
            "detect", "--slices", str(manifest), "--model", str(work / "m.ckpt"), "--nifti", "",
            "--root", str(work), "--out", str(work / out), "--metrics", str(work / f"{out}.json"),
            "--sizes", "64", "128", "--batch_size", "32", "--n_overlays", "0",
            "--no-hu_gate",  # the tiny PNG set has no HU volumes
        ]  # fmt: skip

    label = "sharded detection, torchrun 2 ranks vs 1 process"
    try:
        single = subprocess.run(
            [sys.executable, "-m", "ichinpaint.cli", *detect_args("single")],
            env=smoke_env(), capture_output=True, text=True, timeout=max(budget.left(), 10),
        )  # fmt: skip
        if single.returncode != 0:
            return Row("smoke", label, 2, note=f"FAILED (1 process): {tail(single)}")
        done = torchrun(
            ["-m", "ichinpaint.cli", *detect_args("sharded")], smoke_env(), budget.left()
        )
    except subprocess.TimeoutExpired:
        return Row("smoke", label, 2, note="FAILED: timed out")
    if done.returncode != 0:
        return Row("smoke", label, 2, note=f"FAILED: {tail(done)}")
    same = compare_dirs(work / "single", work / "sharded")
    return Row("smoke", label, 2, note=f"ok on {device.type}; outputs {same}")


def compare_dirs(a: Path, b: Path) -> str:
    import nibabel as nib
    import numpy as np

    names = sorted(p.name for p in a.glob("*.nii.gz"))
    if names != sorted(p.name for p in b.glob("*.nii.gz")):
        return "DIFFER (series)"
    worst = 0.0
    for name in names:
        x, y = (np.asarray(nib.load(d / name).dataobj) for d in (a, b))
        worst = max(worst, float(np.abs(x - y).max()))
    scores_same = (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes()
    if worst == 0 and scores_same:
        return "identical"
    return f"max map difference {worst:.2e}, scores {'identical' if scores_same else 'differ'}"


def tail(done: subprocess.CompletedProcess) -> str:
    text = (done.stderr or done.stdout or "").strip().splitlines()
    return " / ".join(text[-3:])[-300:]


# -- the table ---------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| section | mode | batch | images/s | TFLOP/s | s/series study grid | s/series default | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.section} | {r.mode} | {r.batch} | {fmt(r.per_s)} | {fmt(r.tflops, 2)} | "
            f"{fmt(r.study_s, 0)} | {fmt(r.default_s, 1)} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget_s", type=float, default=420, help="stop starting rows after this")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per detection row")
    parser.add_argument("--train_steps", type=int, default=6, help="timed steps per training row")
    parser.add_argument("--smoke", choices=("all", "none"), default="all")
    parser.add_argument(
        "--compile_mode",
        default="default",
        help="torch.compile mode: default, reduce-overhead, max-autotune",
    )
    parser.add_argument("--out", default="", help="also write the table here (markdown)")
    parser.add_argument("--ddp_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker()
        return 0
    budget = Budget(args.budget_s)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        spec, name = bd.STUDY_SPEC, torch.cuda.get_device_name(device)
        header = f"device_check on {name}, torch {torch.__version__}: the study's 256 px model"
        train_batch, detect_batches, warmup = 32, (64, 256), 3
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are real fp32
    else:
        print(
            "CUDA is absent: running the tiny model on the CPU (compile rows skipped)", flush=True
        )
        spec, name = TINY, "CPU"
        header = f"device_check on CPU ({os.cpu_count()} cores), torch {torch.__version__}: TINY model {spec.img_size} px (no CUDA)"
        train_batch, detect_batches, warmup = 4, (8, 8), 1
        args.train_steps, args.seconds = min(args.train_steps, 2), min(args.seconds, 0.5)
        torch.set_num_threads(1)  # a smoke of the code paths; shared CPUs thrash with more
    rows: list[Row] = []
    study_work, default_work = series_work(spec)
    compile_mode = args.compile_mode

    def guarded(section: str, mode: str, batch, fn, needs_cuda=False, needs_s=0.0) -> None:
        if needs_cuda and not cuda:
            rows.append(Row(section, mode, batch, note="skipped: needs CUDA"))
            return
        if budget.left() <= needs_s:
            rows.append(
                Row(section, mode, batch, note=f"skipped: {budget.left():.0f} s of budget left")
            )
            return
        start = time.perf_counter()
        try:
            row = fn()
        except Exception as error:  # one failing lever must not lose the other rows
            row = Row(
                section, mode, batch, note=f"FAILED: {type(error).__name__}: {str(error)[:200]}"
            )
        row.note = (row.note + " " if row.note else "") + f"({time.perf_counter() - start:.0f} s)"
        rows.append(row)
        print(f"{section} | {mode} | {fmt(row.per_s)}/s | {row.note}", flush=True)

    def train_job(mode, bf16, cl, sdpa, comp):
        def job() -> Row:
            batch, note = train_batch, "AdamW (fused on CUDA), EMA on device"
            while True:  # fp32 activations of the study's model may not fit at bf16's batch
                try:
                    rate = train_rate(
                        spec, device, batch=batch, bf16=bf16, channels_last=cl, sdpa=sdpa,
                        compile_mode=comp, steps=args.train_steps, warmup=warmup,
                    )  # fmt: skip
                    return Row("train", mode, batch, per_s=rate, note=note)
                except torch.cuda.OutOfMemoryError:
                    if batch == 1:
                        raise
                    note += f"; out of memory at batch {batch}"
                free(device)
                batch //= 2

        return ("train", mode, train_batch, job, comp is not None)

    def detect_job(mode, precision, cl, sdpa, comp, batch):
        def job() -> Row:
            rate, flops = detect_rate(
                spec, device, batch=batch, precision=precision, channels_last=cl, sdpa=sdpa,
                compile_mode=comp, seconds=args.seconds,
            )  # fmt: skip
            return Row(
                "detect UNet", mode, batch, per_s=rate, tflops=rate * flops / 1e12,
                study_s=study_work / rate, default_s=default_work / rate,
                note=f"{flops / 1e9:.0f} GFLOP/forward",
            )  # fmt: skip

        return ("detect UNet", mode, batch, job, comp is not None)

    compiled = f"bf16 + channels_last + sdpa + compile({compile_mode})"
    small, large = detect_batches
    jobs = [  # cheap and certain first: the compile rows last, so a spent budget only skips them
        detect_job("fp32 eager", "fp32", False, False, None, small),
        detect_job("bf16", "bf16", False, False, None, large),
        detect_job("bf16 + channels_last + sdpa", "bf16", True, True, None, large),
        train_job("fp32 eager", False, False, False, None),
        train_job("bf16 + channels_last", True, True, False, None),
        train_job("bf16 + channels_last + sdpa", True, True, True, None),
    ]
    if args.smoke == "all":
        jobs += [
            ("smoke", "DDP training, 2 ranks (gloo)", 2, lambda: smoke_ddp_training(budget), False),
            (
                "smoke", "sharded detection, torchrun 2 ranks vs 1 process", 2,
                lambda: smoke_sharded_detection(budget, device), False,
            ),
        ]  # fmt: skip
    jobs += [
        detect_job(compiled, "bf16", True, True, compile_mode, large),
        train_job(compiled, True, True, True, compile_mode),
    ]
    try:
        for section, mode, batch, job, needs_compile in jobs:
            guarded(
                section,
                mode,
                batch,
                job,
                needs_cuda=needs_compile,
                needs_s=90 if needs_compile else 0,
            )
    except KeyboardInterrupt:  # the shell's hard limit: keep what was measured
        rows.append(Row("-", "interrupted by the time limit", note="later rows not run"))
    rates = [r.per_s for r in rows if r.section == "detect UNet" and r.per_s]
    if rates:
        best = max(rates)
        rows.append(
            Row(
                "projection",
                "36-slice series at the best detect rate",
                "",
                per_s=best,
                study_s=study_work / best,
                default_s=default_work / best,
                note=f"{study_work:,} / {default_work:,} UNet images per series (study / default); "
                "goals: study <= 300 s, default <= 30 s",
            )  # fmt: skip
        )
    order = {"detect UNet": 0, "projection": 1, "train": 2, "smoke": 3, "-": 4}
    rows.sort(key=lambda r: order[r.section])
    text = table(rows, header)
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
