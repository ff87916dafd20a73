"""Is the detector limited by its model? Train longer and larger on a GPU (issue 11).

The CPU budget trains the default tiny UNet on 2400 images. On the GPU machine this
script runs the pipeline's own stage commands: the data stages once, then per variant
train -> detect -> evaluate, each variant in its own folder (runs/<name>/). It prints
one markdown table, a row per variant. Beside them is the `hu_threshold` baseline, on the
same slices and with the same evaluation.

`dvc repro --dry` renders the commands here from params.yaml and dvc.yaml (--prepare);
the GPU machine has no DVC. Only the training options of a variant and the output
paths change, so every other setting is the default's.

    .venv/bin/python benchmarks/gpu_detector.py --prepare    # here: .gpu/commands.json
    benchmarks/gpu_detector.sh                                # there (env + this script)

Training lengths fit the time budget: each long variant first trains a short probe,
and its images/s sets how many images fit in the variant's share of what is left
(never more than --images). The data stages are skipped when data/processed/slices.csv
exists (a warm machine keeps them); delete data/ after changing the data params.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ichinpaint.constants import SUBTYPES

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ROOT / ".gpu/commands.json"
DATA_STAGES = ("synthesize", "filter", "nifti", "mask", "png")
# Outputs of train/detect/evaluate, moved to runs/<variant>/ (inputs stay shared).
OUTPUT_PREFIXES = ("models/", "metrics/", "dvclive/", "data/detections", "data/submission")

GPU_TRAIN = {"--num_workers": ["8"], "--live_dir": [""]}  # no DVC on the GPU machine
LONG = {"--batch_size": ["64"], "--precision": ["bf16-mixed"]}
LARGE = {
    **LONG,
    "--model_channels": ["64"],
    "--channel_mult": ["1", "2", "2", "4"],
    "--num_res_blocks": ["2"],
    "--attention_resolutions": ["8"],
    "--lr": ["0.001"],
}
# name: (train overrides, detect overrides, long: sized by the probe)
VARIANTS = {
    "default (as on the CPU)": ({}, {}, False),
    "long (default UNet, batch 64)": (LONG, {}, True),
    "large-long (64 ch, 4 levels, 2 blocks)": (LARGE, {}, True),
}
BASELINE = ("hu_threshold (no model, the same evaluation)", {"--strategy": ["hu_threshold"]})


def prepare() -> None:
    """Render every stage's command with `dvc repro --dry` (as `dvc repro` would run it)."""
    out = subprocess.run(
        ["dvc", "repro", "--dry", "--force"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    commands = {}
    for line in out.splitlines():
        if line.startswith("> ichinpaint "):
            argv = shlex.split(line[2:])
            commands[argv[1]] = argv[2:]
    COMMANDS.parent.mkdir(exist_ok=True)
    COMMANDS.write_text(json.dumps(commands, indent=1))
    print(f"wrote {COMMANDS.relative_to(ROOT)}: {', '.join(commands)}")


def with_options(argv: list[str], overrides: dict[str, list[str]]) -> list[str]:
    """`argv` with each `--option`'s values replaced (or the option appended)."""
    argv = list(argv)
    for option, values in overrides.items():
        if option in argv:
            i = argv.index(option)
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            argv[i + 1 : j] = values
        else:
            argv += [option, *values]
    return argv


def training_length(images: int) -> dict[str, list[str]]:
    """Train options for a run of `images` images, validated and checkpointed once, at its end."""
    return {
        f"--{key}": [str(images)] for key in ("total_image_seen", "val_every", "checkpoint_every")
    }


def in_run_folder(argv: list[str], run: Path) -> list[str]:
    return [str(run / a) if a.startswith(OUTPUT_PREFIXES) else a for a in argv]


class StageFailed(RuntimeError):
    pass


def stage(name: str, argv: list[str], log: Path) -> float:
    """Run one stage (output to `log`); its seconds. Raises StageFailed with the log's end."""
    start = time.perf_counter()
    print(f"-- {name}: ichinpaint {name} {shlex.join(argv)}", flush=True)
    with log.open("a") as f:
        done = subprocess.run(
            [sys.executable, "-m", "ichinpaint.cli", name, *argv], cwd=ROOT, stdout=f, stderr=f
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        print(tail, flush=True)
        raise StageFailed(f"{name} failed (exit {done.returncode}): {tail.strip()[-200:]}")
    print(f"   {seconds:.0f} s", flush=True)
    return seconds


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


class Experiment:
    def __init__(
        self, commands: dict, budget_s: float, max_images: int, probe_steps: int, out: Path
    ) -> None:
        self.commands = commands
        self.probe_steps = probe_steps
        self.end = time.perf_counter() + budget_s
        self.max_images = max_images
        self.out = out
        self.rows: list[dict] = []
        self.log = ROOT / "runs/log.txt"
        self.log.parent.mkdir(exist_ok=True)

    def left(self) -> float:
        return self.end - time.perf_counter()

    def train(self, run: Path, overrides: dict) -> dict:
        argv = with_options(self.commands["train"], {**GPU_TRAIN, **overrides})
        stage("train", in_run_folder(argv, run), self.log)
        return read(run / "metrics/reports/train.json")

    def detect_and_evaluate(self, run: Path, overrides: dict) -> dict:
        argv = in_run_folder(with_options(self.commands["detect"], overrides), run)
        try:
            detect_s = stage("detect", argv, self.log)
        except StageFailed:  # on the CPU cores instead (16 there): the table still gets a row
            detect_s = stage("detect", with_options(argv, {"--device": ["cpu"]}), self.log)
        stage("evaluate", in_run_folder(self.commands["evaluate"], run), self.log)
        metrics = read(run / "metrics/reports/detection.json")
        metrics["detect_s"] = detect_s
        return metrics

    def probe(self, name: str, overrides: dict) -> tuple[float, float]:
        """Training images/s of a short run of the variant (its first, slower steps
        included: an underestimate) and the run's fixed start-up seconds."""
        batch = int(overrides.get("--batch_size", ["16"])[0])
        images = self.probe_steps * batch
        probe = {**overrides, **training_length(images)}
        start = time.perf_counter()
        rate = self.train(ROOT / f"runs/{slug(name)}-probe", probe)["images_per_s"]
        return rate, max(0.0, time.perf_counter() - start - images / rate)

    def run_variant(self, name: str, train: dict, detect: dict, long: bool, share: int) -> None:
        run = ROOT / f"runs/{slug(name)}"
        if long:
            rate, startup = self.probe(name, train)
            reserve = 45.0  # detect + evaluate
            seconds = max(0.0, (self.left() - reserve * share) / share - startup)
            batch = int(train["--batch_size"][0])
            if rate * seconds < 20 * batch:
                self.note(name, f"skipped: {self.left():.0f} s left at {rate:.0f} images/s")
                return
            images = int(min(self.max_images, rate * seconds) // batch * batch)
            train = {**train, **training_length(images)}
        trained = self.train(run, train)
        metrics = self.detect_and_evaluate(run, detect)
        self.add(name, metrics, trained)

    def baseline(self) -> None:
        name, detect = BASELINE
        run = ROOT / f"runs/{slug(name)}"
        self.add(name, self.detect_and_evaluate(run, detect), {})  # reads no model

    def add(self, name: str, metrics: dict, trained: dict) -> None:
        self.rows.append({"name": name, "train": trained, "detection": metrics})
        self.write()

    def note(self, name: str, why: str) -> None:
        self.rows.append({"name": name, "note": why})
        self.write()

    def write(self) -> None:
        table = markdown(self.rows)
        print(table, flush=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(table + "\n")
        self.out.with_suffix(".json").write_text(json.dumps(self.rows, indent=1, default=str))


def slug(name: str) -> str:
    return name.split(" ")[0]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | images trained | train s | images/s | parameters | slice AUROC | AP | "
        "sens EDH/IPH/IVH/SAH/SDH | FP / healthy series | pixel AUPRC | detect s / series |",
        "|---" * 11 + "|",
    ]
    for row in rows:
        if "note" in row:
            lines.append(f"| {row['name']} | {row['note']} |" + " |" * 9)
            continue
        t, d = row["train"], row["detection"]

        def f(value: object, digits: int = 2) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        sens = "/".join(f(d.get(f"sensitivity_{s}")) for s in SUBTYPES)
        lines.append(
            f"| {row['name']} | {t.get('images_seen', '-')} | {f(t.get('wall_time_s'), 0)} | "
            f"{f(t.get('images_per_s'), 0)} | {t.get('parameters', '-')} | "
            f"{f(d.get('slice_auroc'))} | {f(d.get('slice_ap'))} | {sens} | "
            f"{f(d.get('fp_components_per_healthy_series'))} | {f(d.get('pixel_auprc'))} | "
            f"{f(d.get('seconds_per_series'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepare", action="store_true", help="here: render the commands")
    parser.add_argument("--budget_s", type=float, default=360, help="stop starting work after")
    parser.add_argument("--images", type=int, default=96_000, help="most images per long run")
    parser.add_argument("--variants", nargs="*", help="first words of the variants (all)")
    parser.add_argument("--probe_steps", type=int, default=60, help="steps of each probe run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/gpu_detector.md")
    args = parser.parse_args()
    if args.prepare:
        return prepare()
    exp = Experiment(
        json.loads(COMMANDS.read_text()), args.budget_s, args.images, args.probe_steps, args.out
    )
    if not (ROOT / "data/processed/slices.csv").is_file():  # a warm machine keeps them
        for name in DATA_STAGES:
            stage(name, exp.commands[name], exp.log)
    names = [n for n in VARIANTS if not args.variants or slug(n) in args.variants]
    for i, name in enumerate(names):
        train, detect, long = VARIANTS[name]
        try:
            exp.run_variant(name, train, detect, long, sum(VARIANTS[n][2] for n in names[i:]))
            if slug(name) == "default":
                exp.baseline()
        except StageFailed as err:  # the next variant may still run
            exp.note(name, str(err).replace("|", "/").replace("\n", " "))
    print(f"done, {exp.left():.0f} s of the budget left")


if __name__ == "__main__":
    main()
