"""The ceiling of re-painting detectors on the synthetic data, per model grid size.

A re-painting detector flags where a slice is brighter than its healthy re-painting.
The best re-painting any model could make is the same head without its bleed and
without noise (noise cannot be predicted). The generator can render exactly that
(`render_plan(plan, healthy_twin=True)`). This script builds the detector's own map from
it: positive difference in brain-window units, zero outside the brain, times the HU gate.
It runs the pipeline's `ichinpaint evaluate` on that map, beside the HU rule
(`hu_threshold`), on the same slices and at each model grid size asked for. What the
twin cannot reach at a size, no model trained at that size can. At the pipeline's own
size, the trained detector (`metrics/reports/detection.json`) is the third row.

    .venv/bin/python benchmarks/healthy_twin.py [--sizes 64 128 256] [--out DIR]

It needs the pipeline's data stages on the synthetic data (`dvc repro png`). It reads
params.yaml for the data and the evaluation. Sizes other than png.img_size get their
own PNGs (`ichinpaint png`). Everything it writes (twins, PNGs, maps, reports) goes to
--out/<hash of the data's params>, so another dataset never reads a stale cache. The
evaluate settings are the pipeline's.
Component sizes and the median filter stay in model pixels, as evaluate defines them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from bench_detect import stage_args  # params group -> options, one declaration for benchmarks

from ichinpaint import io, manifest, volume
from ichinpaint.constants import SUBTYPES
from ichinpaint.detection import hu
from ichinpaint.detection.geometry import series_affine, series_volume
from ichinpaint.detection.runner import SCORES_COLUMNS
from ichinpaint.scores import slice_scores
from ichinpaint.synthetic import dataset
from ichinpaint.synthetic.plan import plan_dataset
from ichinpaint.windowing import brain_window, to_model_grid

NIFTI = Path("data/interim/nifti")
# The twin must lie on the pipeline's grid: on slices without blood the real slice minus its
# twin is the noise alone (3-5.5 HU in the generator), so a larger spread means misalignment.
MAX_RESIDUAL_SD_HU = 10.0


# The params groups that decide the data and the HU rule's maps: the cached twins, PNGs and
# HU maps under --out belong to one combination of them.
DATA_GROUPS = ("data", "synthesize", "filter", "nifti", "mask", "png", "detect")


def ground_truth_dir(params: dict) -> Path:
    """The synthetic data's ground truth (the synthesize stage writes it in the raw folder)."""
    return Path(params["data"]["raw_dir"]) / "ground_truth"


def work_folder(root: Path, params: dict) -> Path:
    """`root`/<hash of the data's params>: a changed dataset never reads another's cache."""
    text = json.dumps({g: params[g] for g in DATA_GROUPS}, sort_keys=True)
    return root / hashlib.sha256(text.encode()).hexdigest()[:12]


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


class TwinRenderer:
    """Picklable job: the healthy twin of one series, as an HU volume on the nifti grid."""

    def __init__(self, plans: dict, ground_truth: Path, out: Path) -> None:
        self.plans, self.ground_truth, self.out = plans, ground_truth, out

    def __call__(self, uid: str) -> dict:
        path = self.out / f"{uid}.npy"
        plan = self.plans[uid]
        kept = [k for k in range(plan.n_slices) if k != plan.truncated_k]
        if not path.is_file():
            twin = dataset.render_plan(plan, healthy_twin=True)
            np.save(path, volume.stack_slices([twin.hu[k] for k in kept]).astype(np.float32))
        twin_hu = np.load(path)
        real = np.asarray(nib.load(NIFTI / f"{uid}.nii.gz").dataobj, dtype=np.float32)
        truth = np.asarray(nib.load(self.ground_truth / uid / "lesion.nii.gz").dataobj)
        brain = np.asarray(nib.load(self.ground_truth / uid / "brain.nii.gz").dataobj)
        if real.shape != twin_hu.shape:
            raise ValueError(f"{uid}: twin {twin_hu.shape} but the nifti stage has {real.shape}")
        # Slices without labelled blood: a bleed's partial volume (blood in the inner
        # table, say) reaches past its label on its own slices, never the whole series.
        clear = ~truth.any(axis=(0, 1))
        away = (brain > 0) & clear[None, None, :]
        if not away.any():
            return {"series_uid": uid, "residual_sd_hu": float("nan")}
        sd = float((real - twin_hu)[away].std())
        if sd > MAX_RESIDUAL_SD_HU:
            raise ValueError(
                f"{uid}: real minus twin spreads {sd:.1f} HU on slices without blood: "
                "not the same grid"
            )
        return {"series_uid": uid, "residual_sd_hu": sd}


def twin_maps(rows: pd.DataFrame, twin_hu: np.ndarray, real_hu: np.ndarray, settings: dict):
    """The detector's map with the twin as the re-painting: (used maps, brain masks, slice ks)."""
    canvas, img_size = settings["canvas"], settings["img_size"]
    used = rows[rows["use"]]
    ks = [int(k) for k in used["slice_index"]]
    maps, brains = [], []
    gate = hu.series_band_fractions(real_hu, ks, settings["gate_hu"], canvas, img_size)
    for n, (k, row) in enumerate(zip(ks, used.itertuples(), strict=True)):
        real = manifest.read_png(Path(row.image_path), img_size)
        brain = manifest.read_mask(Path(row.mask_path), img_size)
        twin = to_model_grid(brain_window(volume.slice_image(twin_hu, k)), canvas, img_size)
        maps.append(twin_map(real, twin, brain, gate[n]))
        brains.append(brain)
    return np.stack(maps), np.stack(brains), ks


def twin_map(real: np.ndarray, twin: np.ndarray, brain: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """The detector's map (sign positive, HU-gated) of a brain-window PNG against its twin's."""
    diff = (real.astype(np.float32) - twin.astype(np.float32)) / 255.0
    return np.clip(diff, 0.0, None) * (brain > 0) * gate


def write_twin_detections(table: pd.DataFrame, twins: Path, out: Path, settings: dict) -> None:
    """The twin's maps in the detect stage's layout (maps, scores.csv, metrics)."""
    out.mkdir(parents=True, exist_ok=True)
    rows_out, start = [], time.perf_counter()
    series = sorted(table["series_uid"].unique())
    for uid in series:
        rows = table[table["series_uid"] == uid].sort_values("slice_index")
        real_hu = hu.load_hu_volume(NIFTI, uid)
        maps, brains, ks = twin_maps(rows, np.load(twins / f"{uid}.npy"), real_hu, settings)
        n_slices = int(rows["n_slices"].iloc[0])
        affine = series_affine(uid, NIFTI, settings["canvas"], settings["img_size"], n_slices)
        nib.save(nib.Nifti1Image(series_volume(maps, ks, n_slices), affine), out / f"{uid}.nii.gz")
        for n, row in enumerate(rows[rows["use"]].itertuples()):
            record = {c: getattr(row, c) for c in ("image_id", "series_uid", "patient_id", "split")}
            record["slice_index"] = ks[n]
            record.update(slice_scores(maps[n], brains[n] > 0))
            record.update({label: int(row._asdict()[label]) for label in (*SUBTYPES, "any")})
            rows_out.append(record)
    pd.DataFrame(rows_out, columns=list(SCORES_COLUMNS)).to_csv(out / "scores.csv", index=False)
    seconds = (time.perf_counter() - start) / max(len(series), 1)
    io.write_json(out.with_suffix(".detect.json"), {"seconds_per_series": seconds})


def manifest_for(size: int, params: dict, out: Path) -> Path:
    """slices.csv at `size`: the pipeline's own, or a fresh PNG export beside it."""
    if size == params["png"]["img_size"]:
        return Path("data/processed/slices.csv")
    folder = out / f"png{size}"
    if not (folder / "slices.csv").is_file():
        png = {**params["png"], "img_size": size}
        run([
            "ichinpaint", "png", *stage_args(png), "--nifti", str(NIFTI),
            "--masks", "data/interim/brainmask", "--slices", "data/interim/slices.csv",
            "--out", str(folder), "--metrics", str(out / f"png{size}.json"),
        ])  # fmt: skip
    return folder / "slices.csv"


def evaluate(name: str, detections: Path, detect_json: Path, slices: Path, size: int,
             params: dict, out: Path) -> dict:  # fmt: skip
    report = out / f"{name}.json"
    run([
        "ichinpaint", "evaluate", *stage_args(params["evaluate"]),
        "--canvas", str(params["png"]["canvas"]), "--img_size", str(size),
        "--slices", str(slices), "--detections", str(detections),
        "--detect_metrics", str(detect_json),
        "--ground_truth", str(ground_truth_dir(params)),
        "--metrics", str(report), "--headline", str(out / f"{name}.headline.json"),
        "--plots", str(out / f"{name}.plots"), "--gallery", str(out / f"{name}.gallery"),
        "--submission", str(out / f"{name}.submission.csv"),
        "--decision", str(out / f"{name}.decision.json"),
    ])  # fmt: skip
    return json.loads(report.read_text())


def hu_rule(size: int, slices: Path, params: dict, out: Path) -> tuple[Path, Path]:
    detections, metrics = out / f"hu{size}", out / f"hu{size}.detect.json"
    if not (detections / "scores.csv").is_file():
        run([
            "ichinpaint", "detect", "--strategy", "hu_threshold",
            "--baseline_hu", *map(str, params["detect"]["baseline_hu"]),
            "--splits", *params["detect"]["splits"], "--canvas", str(params["png"]["canvas"]),
            "--slices", str(slices), "--nifti", str(NIFTI), "--out", str(detections),
            "--metrics", str(metrics), "--work", str(out / f"hu{size}.parts"),
        ])  # fmt: skip
    return detections, metrics


def table_row(size: int, name: str, m: dict) -> str:
    sens = "/".join(f"{m[f'sensitivity_{s}']:.2f}" for s in SUBTYPES)
    return (
        f"| {size} | {name} | {m['slice_auroc']:.3f} | {m['slice_ap']:.2f} | {sens} | "
        f"{m['fp_components_per_healthy_series']:.2f} | {m['pixel_auprc']:.2f} |"
    )


def detector_row(size: int, params: dict) -> str:
    """The trained detector's evaluation, when it is the one of this workspace's data."""
    name = f"trained detector ({params['detect']['strategy']})"
    stale = subprocess.run(
        ["dvc", "status", "--quiet", "--with-deps", "evaluate"], capture_output=True
    )
    if stale.returncode != 0:
        return f"| {size} | {name}: not shown, `dvc status evaluate` is not clean | | | | | |"
    return table_row(size, name, json.loads(Path("metrics/reports/detection.json").read_text()))


def map_statistics(table: pd.DataFrame, detections: Path, ground_truth: Path, canvas: int) -> dict:
    """Where a map stands against healthy noise: its median on bleed pixels (test) and its
    99.5th percentile on healthy validation brain pixels, in window units (1.0 = 80 HU)."""
    on_blood, healthy = [], []
    for uid, rows in table[table["use"]].groupby("series_uid"):
        maps = np.asarray(nib.load(detections / f"{uid}.nii.gz").dataobj)
        lesion = np.asarray(nib.load(ground_truth / uid / "lesion.nii.gz").dataobj) > 0
        for row in rows.itertuples():
            k, size = int(row.slice_index), maps.shape[0]
            values = volume.slice_image(maps, k)
            if row.split == "val" and not row.any:
                brain = manifest.read_mask(Path(row.mask_path), size)
                healthy.append(values[brain])
            elif row.split == "test" and row.any:
                blood = volume.slice_image(lesion, k).astype(np.float64)
                on_blood.append(values[to_model_grid(blood, canvas, size) > 0.5])
    return {
        "blood_median": float(np.median(np.concatenate(on_blood))),
        "healthy_q995": float(np.percentile(np.concatenate(healthy), 99.5)),
    }


def gap_lines(table: pd.DataFrame, twin_dir: Path, ground_truth: Path, canvas: int) -> list[str]:
    """The trained detector's map against the twin's: how much of a bleed it re-paints away,
    and how far its healthy re-painting errs beyond the noise."""
    model = map_statistics(table, Path("data/detections"), ground_truth, canvas)
    twin = map_statistics(table, twin_dir, ground_truth, canvas)
    return [
        "| map | median on bleed pixels (test) | 99.5th pct on healthy val pixels | ratio |",
        "|---|---|---|---|",
        *(
            f"| {name} | {m['blood_median']:.3f} | {m['healthy_q995']:.3f} | "
            f"{m['blood_median'] / max(m['healthy_q995'], 1e-9):.2f} |"
            for name, m in (("trained detector", model), ("healthy twin", twin))
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ichinpaint-twin"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--n_jobs", type=int, default=-1)
    args = parser.parse_args(argv)
    params = yaml.safe_load(args.params.read_text())
    if params["data"]["source"] != "synthetic":
        sys.exit("the healthy twin exists for the synthetic data only (data.source: synthetic)")
    ground_truth = ground_truth_dir(params)
    syn = params["synthesize"]
    plan = plan_dataset(
        syn["n_patients"], syn["n_slices"], syn["matrix"], syn["hemorrhage_fraction"],
        syn["seed"], min_slices=syn["min_slices"],
    )  # fmt: skip
    plans = {p.series_uid: p for p in plan.series}
    base = manifest.read(Path("data/processed/slices.csv"))
    splits = params["detect"]["splits"]
    uids = sorted(base.loc[base["split"].isin(splits), "series_uid"].unique())
    missing = [u for u in uids if u not in plans]
    if missing:
        sys.exit(f"series {missing[:3]} are not in the plan of params.yaml's synthesize group")
    out = work_folder(args.out, params)
    print(f"work folder: {out}")
    twins = out / "twin_hu"
    twins.mkdir(parents=True, exist_ok=True)
    checks = io.parallel_map(
        TwinRenderer(plans, ground_truth, twins),
        uids,
        n_jobs=args.n_jobs,
        desc="healthy twins",
        unit="series",
    )
    sds = [c["residual_sd_hu"] for c in checks if np.isfinite(c["residual_sd_hu"])]
    print(f"real - twin on slices without blood: {min(sds):.1f}-{max(sds):.1f} HU sd (the noise)")
    lines, gap = [], []
    for size in args.sizes:
        slices = manifest_for(size, params, out)
        table = manifest.read(slices)
        table = table[table["split"].isin(splits)]
        settings = {
            "canvas": params["png"]["canvas"],
            "img_size": size,
            "gate_hu": params["detect"]["gate_hu"],
        }
        twin_dir = out / f"twin{size}"
        write_twin_detections(table, twins, twin_dir, settings)
        m = evaluate(f"eval_twin{size}", twin_dir, twin_dir.with_suffix(".detect.json"),
                     slices, size, params, out)  # fmt: skip
        lines.append(table_row(size, "healthy twin (ceiling)", m))
        detections, metrics = hu_rule(size, slices, params, out)
        m = evaluate(f"eval_hu{size}", detections, metrics, slices, size, params, out)
        lines.append(table_row(size, "hu_threshold", m))
        if size == params["png"]["img_size"]:
            lines.append(detector_row(size, params))
            if "not shown" not in lines[-1]:
                gap = gap_lines(table, twin_dir, ground_truth, params["png"]["canvas"])
    print()
    print("| px | re-painting | slice AUROC | AP | sens EDH/IPH/IVH/SAH/SDH | FP / healthy series | pixel AUPRC |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    if gap:
        print(
            f"\nThe trained detector's map against the twin's ({params['png']['img_size']} px):\n"
        )
        print("\n".join(gap))


if __name__ == "__main__":
    main()
