"""Detection over whole series: load the PNGs, re-paint every grid pass, write maps and scores.

One series at a time, all of its (used slice x grid pass) patterns go through the
sampler in batches of `batch_size`, whatever slice, square size, shift or pass they
come from: on a GPU, large mixed batches are what makes the 25-minutes-per-series
study grid fast. Unused slices (``use == False``) are never inpainted and stay zero.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from ichinpaint import grid, volume
from ichinpaint.constants import LABELS
from ichinpaint.detection.anomaly import combine_grids, difference_in_window_units
from ichinpaint.detection.sampler import InpaintSampler, UNetRunner
from ichinpaint.detection.strategies import Strategy, inpaint_batch
from ichinpaint.model import make_conditioning, scaled_sizes

# The same reductions evaluate uses, so scores.csv and evaluate agree by construction.
from ichinpaint.scores import SCORE_NAMES, slice_scores
from ichinpaint.windowing import _centre_offsets

MANIFEST_REQUIRED: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "patient_id",
    "split",
    "slice_index",
    "n_slices",
    "image_path",
    "mask_path",
    "above_path",
    "below_path",
    "use",
    *LABELS,
)
SCORES_COLUMNS: tuple[str, ...] = (
    "image_id",
    "series_uid",
    "patient_id",
    "split",
    "slice_index",
    *SCORE_NAMES,
    *LABELS,
)


# -- inputs ----------------------------------------------------------------------------


def read_manifest(path: str | Path, splits: Sequence[str]) -> pd.DataFrame:
    """The png stage's slices.csv restricted to `splits`, with ``use`` as a real boolean."""
    table = pd.read_csv(path, dtype={"image_id": str, "series_uid": str, "patient_id": str})
    missing = [c for c in MANIFEST_REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    use = table["use"].astype(str).str.strip().str.lower()
    bad = ~use.isin(["true", "false"])
    if bad.any():
        raise ValueError(
            f"{path}: column use must be True/False, got {table['use'][bad].iloc[0]!r}"
        )
    table["use"] = use == "true"
    table = table[table["split"].isin(list(splits))].copy()
    for uid, group in table.groupby("series_uid"):
        expected = int(group["n_slices"].iloc[0])
        indices = sorted(group["slice_index"].astype(int))
        if indices != list(range(expected)):
            raise ValueError(
                f"{path}: series {uid} lists slice indices {indices[:5]}... but n_slices={expected}; "
                "the png stage exports every slice"
            )
    return table.sort_values(["series_uid", "slice_index"]).reset_index(drop=True)


def read_png(path: Path, img_size: int) -> np.ndarray:
    """An 8-bit grayscale PNG of the model grid as uint8 ``[row, col]``, or a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: PNG listed in slices.csv is missing")
    with Image.open(path) as image:
        if image.mode != "L":
            raise ValueError(f"{path}: expected an 8-bit grayscale PNG, got mode {image.mode}")
        array = np.asarray(image)
    if array.shape != (img_size, img_size):
        raise ValueError(
            f"{path}: shape {array.shape} is not the model's ({img_size}, {img_size}); "
            "png.img_size and train.img_size must agree"
        )
    return array


@dataclasses.dataclass
class SeriesImages:
    """The used slices of one series as model inputs: images in [-1, 1], brain masks {0, 1}."""

    image: np.ndarray  # (n_used, H, W) float32
    brain: np.ndarray  # (n_used, H, W) float32 0/1
    above: np.ndarray
    below: np.ndarray
    slice_index: list[int]


def load_series_images(rows: pd.DataFrame, root: Path, img_size: int) -> SeriesImages:
    """Read the PNGs of the used slices of one series (rows of the manifest)."""
    used = rows[rows["use"]]

    def model_scale(column: str) -> np.ndarray:
        stack = [read_png(root / p, img_size) for p in used[column]]
        return np.stack(stack).astype(np.float32) / 127.5 - 1 if stack else _empty(img_size)

    masks = [read_png(root / p, img_size) > 127 for p in used["mask_path"]]
    brain = np.stack(masks).astype(np.float32) if masks else _empty(img_size)
    return SeriesImages(
        image=model_scale("image_path"),
        brain=brain,
        above=model_scale("above_path"),
        below=model_scale("below_path"),
        slice_index=[int(k) for k in used["slice_index"]],
    )


def _empty(img_size: int) -> np.ndarray:
    return np.zeros((0, img_size, img_size), np.float32)


# -- the grid --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GridPlan:
    """Which (slice, pass) patterns to re-paint, and which grid each pass belongs to."""

    passes: list[grid.GridPass]
    masks: np.ndarray  # (n_passes, H, W) bool
    grid_of_pass: np.ndarray  # (n_passes,) int: index of its (size, shift) grid
    n_grids: int
    items: np.ndarray  # (n_items, 2) int: (used-slice position, pass id)


def plan_grid(brains: np.ndarray, sizes: Sequence[int], offsets: bool) -> GridPlan:
    """All patterns of the detection grid that hide some brain, for every used slice."""
    img_size = brains.shape[-1]
    passes = grid.all_passes(sizes, offsets)
    pass_id = {gp: i for i, gp in enumerate(passes)}
    grid_keys = list(dict.fromkeys((gp.size, gp.shift_rows, gp.shift_cols) for gp in passes))
    grid_of_pass = np.array(
        [grid_keys.index((gp.size, gp.shift_rows, gp.shift_cols)) for gp in passes]
    )
    masks = np.stack([grid.pass_mask(img_size, gp) for gp in passes])
    items = [
        (s, pass_id[gp])
        for s, brain in enumerate(brains)
        for gp, _ in grid.passes_touching(brain > 0, passes)
    ]
    return GridPlan(
        passes=passes,
        masks=masks,
        grid_of_pass=grid_of_pass,
        n_grids=len(grid_keys),
        items=np.array(items, dtype=np.int64).reshape(-1, 2),
    )


# -- the model side --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DetectSettings:
    """Everything detection needs besides the model and the data (the stage's params)."""

    strategy: Strategy
    sizes_at_256: tuple[int, ...] = (8, 16, 32, 64)
    offsets: bool = True
    combine: str = "max"
    batch_size: int = 256
    seed: int = 0


def pick_device(name: str) -> torch.device:
    """`auto` = CUDA when there is one; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda asked for, but torch sees no CUDA device")
    return device


def series_generator(device: torch.device, seed: int, series_uid: str) -> torch.Generator:
    """A noise source per series, so a series' map does not depend on which series ran before."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + zlib.crc32(series_uid.encode())) % 2**63)
    return generator


@torch.inference_mode()
def detect_series(
    images: SeriesImages,
    sampler: InpaintSampler,
    settings: DetectSettings,
    generator: torch.Generator | None = None,
    plan: GridPlan | None = None,
) -> np.ndarray:
    """Anomaly maps ``(n_used, H, W)`` (window units, zero outside the brain) of one series."""
    n_used, _, img_size = images.image.shape
    plan = plan or plan_series(images, settings)
    device = sampler.unet.device

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

    image = on_device(images.image)[:, None]
    brain = on_device(images.brain)[:, None]
    above = on_device(images.above)[:, None]
    below = on_device(images.below)[:, None]
    pass_masks = on_device(plan.masks)[:, None]
    grid_of_pass = torch.from_numpy(plan.grid_of_pass).to(device)
    per_grid = torch.zeros((n_used, plan.n_grids, img_size, img_size), device=device)
    items = torch.from_numpy(plan.items).to(device)
    for chunk in items.split(settings.batch_size) if len(items) else ():
        s, p = chunk[:, 0], chunk[:, 1]
        original, mask = image[s], pass_masks[p]
        concat = make_conditioning(original, brain[s], above[s], below[s], mask)
        inpainted = inpaint_batch(
            settings.strategy, sampler, original, concat, mask, generator=generator
        )
        diff = difference_in_window_units(original, inpainted) * mask
        per_grid.index_put_((s, grid_of_pass[p]), diff[:, 0], accumulate=True)
    maps = combine_grids(per_grid, settings.combine) * brain[:, 0]
    return maps.float().cpu().numpy()


def plan_series(images: SeriesImages, settings: DetectSettings) -> GridPlan:
    """The grid plan of one series with the square sizes scaled to its image size."""
    sizes = scaled_sizes(settings.sizes_at_256, images.image.shape[-1])
    return plan_grid(images.brain, sizes, settings.offsets)


def expected_forwards(plan: GridPlan, sampler: InpaintSampler, strategy: Strategy) -> int:
    """UNet images a plan needs: patterns that hide brain x calls per pattern."""
    return len(plan.items) * strategy.forwards_per_image(sampler)


# -- outputs ---------------------------------------------------------------------------


def model_grid_affine(
    source_affine: np.ndarray, native_shape: Sequence[int], canvas: int, img_size: int
) -> np.ndarray:
    """The source volume's affine for voxels of the model grid (pad/crop to `canvas`, resize).

    Model pixel ``c'`` covers canvas pixels around ``scale * c' + (scale - 1) / 2``,
    and canvas pixel ``c`` is native pixel ``c + src - dst`` (the png stage's centring).
    """
    scale = canvas / img_size
    to_native = np.eye(4)
    for axis in (0, 1):  # axis 0 = column, axis 1 = row (data[col, row, k])
        src, dst = _centre_offsets(int(native_shape[axis]), canvas)
        to_native[axis, axis] = scale
        to_native[axis, 3] = (scale - 1) / 2 + src - dst
    return np.asarray(source_affine, dtype=float) @ to_native


def series_volume(maps: np.ndarray, slice_index: Sequence[int], n_slices: int) -> np.ndarray:
    """The ``data[col, row, k]`` float32 volume with the used slices' maps, zeros elsewhere."""
    img_size = maps.shape[-1]
    slices = [np.zeros((img_size, img_size), np.float32) for _ in range(n_slices)]
    for m, k in zip(maps, slice_index, strict=True):
        slices[k] = m.astype(np.float32)
    return volume.stack_slices(slices).astype(np.float32)


def save_overlay(
    path: Path,
    ct: np.ndarray,
    anomaly: np.ndarray,
    title: str,
    vmax: float = 0.5,
    show_above: float = 0.1,
) -> None:
    """CT, map, and the map over the CT side by side: what a reviewer looks at first.

    The overlay panel shows the map only above `show_above` (0.1 = 8 HU) so that the CT
    stays readable under it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct01 = (np.asarray(ct) + 1) / 2
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9), constrained_layout=True)
    axes[0].imshow(ct01, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("CT (brain window)")
    shown = axes[1].imshow(anomaly, cmap="magma", vmin=0, vmax=vmax)
    axes[1].set_title("anomaly map")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="|diff| (1 = 80 HU)")
    axes[2].imshow(ct01, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(
        np.ma.masked_less(anomaly, show_above), cmap="magma", vmin=0, vmax=vmax, alpha=0.7
    )
    axes[2].set_title(f"overlay (> {show_above * 80:g} HU)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)


class OverlayPicker:
    """Keeps the highest-scoring slices with and without a bleed, to draw at the end.

    Only `per_group` candidates per group are held in memory, so this works for any
    number of series.
    """

    def __init__(self, per_group: int, score: str = "score_top1pct") -> None:
        self.per_group = per_group
        self.score = score
        self._heaps: dict[str, list[tuple[float, int, dict[str, Any]]]] = {
            "bleed": [],
            "healthy": [],
        }
        self._counter = 0

    def offer(self, row: dict[str, Any], ct: np.ndarray, anomaly: np.ndarray) -> None:
        if self.per_group <= 0:
            return
        heap = self._heaps["bleed" if int(row["any"]) else "healthy"]
        entry = (float(row[self.score]), self._counter, {"row": row, "ct": ct, "map": anomaly})
        self._counter += 1
        if len(heap) < self.per_group:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for group, heap in self._heaps.items():
            for rank, (_, _, item) in enumerate(sorted(heap, key=lambda e: -e[0])):
                row = item["row"]
                labels = [name for name in LABELS[:-1] if int(row[name])] or ["healthy"]
                title = (
                    f"{group} #{rank + 1}: {row['image_id']} ({row['series_uid']}, k={row['slice_index']})"
                    f" - {', '.join(labels)} - {self.score} {row[self.score]:.3f}"
                )
                path = out_dir / f"{group}_{rank + 1:02d}_{row['image_id']}.png"
                save_overlay(path, item["ct"], item["map"], title)
                written.append(path)
        return written


# -- the whole run ---------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    scores: pd.DataFrame
    metrics: dict[str, Any]


def run_detection(
    manifest: pd.DataFrame,
    module,
    settings: DetectSettings,
    *,
    out_dir: Path,
    root: Path = Path("."),
    nifti_dir: Path | None = None,
    canvas: int | None = None,
    n_overlays: int = 8,
    bf16: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    net=None,
) -> RunResult:
    """Detect on every series of `manifest`; write ``<uid>.nii.gz`` and overlays into `out_dir`.

    The caller writes ``scores.csv`` and the metrics (it owns the atomic directory).
    `nifti_dir` + `canvas` give each map the source volume's affine on the model grid;
    without them the affine is the identity scaled to nothing (a bare voxel grid).
    `net` runs the UNet on another backend (see `UNetRunner`).
    """
    img_size = int(module.config.model.input_size)
    precision = "bf16" if bf16 else "fp32"
    runner = UNetRunner(
        module, precision=precision, channels_last=channels_last, compile=compile, net=net
    )
    sampler = InpaintSampler(module.diffusion, runner, ddim_steps=settings.strategy.ddim_steps)
    picker = OverlayPicker(n_overlays // 2)
    rows: list[dict[str, Any]] = []
    per_series_seconds: list[float] = []
    expected_total = 0
    empty_brain = 0
    groups = list(manifest.groupby("series_uid", sort=True))
    start_all = time.perf_counter()
    for uid, series_rows in tqdm(groups, desc="detect series", unit="series", disable=None):
        start = time.perf_counter()
        images = load_series_images(series_rows, root, img_size)
        plan = plan_series(images, settings)
        expected = expected_forwards(plan, sampler, settings.strategy)
        expected_total += expected
        empty_brain += int((images.brain.sum(axis=(1, 2)) == 0).sum())
        with tqdm(total=expected, desc=f"  {uid}", unit="img", leave=False, disable=None) as bar:
            runner.progress = bar
            generator = series_generator(runner.device, settings.seed, uid)
            maps = detect_series(images, sampler, settings, generator, plan)
            runner.progress = None
        n_slices = int(series_rows["n_slices"].iloc[0])
        data = series_volume(maps, images.slice_index, n_slices)
        affine = series_affine(uid, nifti_dir, canvas, img_size, n_slices)
        nib.save(nib.Nifti1Image(data, affine), out_dir / f"{uid}.nii.gz")
        used = series_rows[series_rows["use"]]
        for pos, (_, meta) in enumerate(used.iterrows()):
            row = {key: meta[key] for key in ("image_id", "series_uid", "patient_id", "split")}
            row["slice_index"] = int(meta["slice_index"])
            row.update(slice_scores(maps[pos], images.brain[pos] > 0))
            row.update({label: int(meta[label]) for label in LABELS})
            rows.append(row)
            picker.offer(row, images.image[pos], maps[pos])
        per_series_seconds.append(time.perf_counter() - start)
    seconds_total = time.perf_counter() - start_all
    if runner.forwards != expected_total:
        raise RuntimeError(
            f"counted {runner.forwards} UNet images but the plan needs {expected_total}: the sampler "
            "and Strategy.forwards_per_image disagree"
        )
    picker.write(out_dir / "overlays")
    scores = pd.DataFrame(rows, columns=list(SCORES_COLUMNS))
    n_used = len(scores)
    metrics = {
        "strategy": settings.strategy.name,
        "strategy_detail": settings.strategy.describe(),
        "forwards_total": runner.forwards,
        "forwards_per_slice": runner.forwards / n_used if n_used else 0.0,
        "forwards_per_second": runner.forwards / seconds_total if seconds_total > 0 else 0.0,
        "seconds_per_series": float(np.mean(per_series_seconds)) if per_series_seconds else 0.0,
        "seconds_total": seconds_total,
        "series": len(groups),
        "slices": n_used,
        "slices_not_used": int((~manifest["use"]).sum()),
        "slices_empty_brain": empty_brain,
        "device": describe_device(runner.device),
        "img_size": img_size,
        "sizes_px": ",".join(str(s) for s in scaled_sizes(settings.sizes_at_256, img_size)),
    }
    return RunResult(scores=scores, metrics=metrics)


def series_affine(
    uid: str, nifti_dir: Path | None, canvas: int | None, img_size: int, n_slices: int
) -> np.ndarray:
    """The source volume's affine on the model grid, or the identity when no source is given."""
    if nifti_dir is None or canvas is None:
        return np.eye(4)
    path = nifti_dir / f"{uid}.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source volume of series {uid} is missing (nifti stage)")
    header = nib.load(path)
    if header.shape[2] != n_slices:
        raise ValueError(f"{path}: {header.shape[2]} slices but slices.csv says {n_slices}")
    return model_grid_affine(header.affine, header.shape, canvas, img_size)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"
