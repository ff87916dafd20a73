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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ichinpaint import grid, volume
from ichinpaint import manifest as slices_manifest  # `manifest` is the table below
from ichinpaint.constants import LABELS
from ichinpaint.detection import hu, shards
from ichinpaint.detection.anomaly import combine_grids, difference_in_window_units
from ichinpaint.detection.sampler import InpaintSampler, UNetRunner
from ichinpaint.detection.strategies import Strategy, inpaint_batch
from ichinpaint.model import make_conditioning, scaled_sizes, spec_of

# The same reductions evaluate uses, so scores.csv and evaluate agree by construction.
from ichinpaint.scores import SCORE_NAMES, slice_scores
from ichinpaint.windowing import _centre_offsets

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
    """The png stage's slices.csv restricted to `splits`, every series complete, sorted."""
    table = slices_manifest.read(path, slices_manifest.FOR_DETECTION, splits=splits)
    slices_manifest.check_complete_series(table, path)
    return table.sort_values(["series_uid", "slice_index"]).reset_index(drop=True)


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
        stack = [slices_manifest.read_png(root / p, img_size) for p in used[column]]
        return np.stack(stack).astype(np.float32) / 127.5 - 1 if stack else _empty(img_size)

    masks = [slices_manifest.read_mask(root / p, img_size) for p in used["mask_path"]]
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
    sign: str = "absolute"
    # Multiply the map by the share of native pixels in `gate_band` (HU): differences
    # on bone, calcification, CSF or fat count for nothing (ichinpaint.detection.hu).
    hu_gate: bool = False
    gate_band: tuple[float, float] = hu.GATE_BAND_HU
    baseline_band: tuple[float, float] = hu.BASELINE_BAND_HU
    # Test-time augmentation: also re-paint the left-right mirrored series and average
    # the two maps (twice the UNet calls); a healthy asymmetry of one re-painting is
    # unlikely to recur in the other.
    mirror: bool = False

    @property
    def needs_hu(self) -> bool:
        return self.hu_gate or not self.strategy.needs_model


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
    """Anomaly maps ``(n_used, H, W)`` (window units, zero outside the brain) of one series.

    With ``settings.mirror`` the mean of the maps of the series and of its mirror image.
    """
    plan = plan or plan_series(images, settings)
    maps = repaint_differences(images, sampler, settings, generator, plan)
    if settings.mirror:
        flipped = mirror_images(images)
        mirrored = repaint_differences(
            flipped, sampler, settings, generator, plan_series(flipped, settings)
        )
        maps = (maps + mirrored[..., ::-1]) / 2
    return maps


def mirror_images(images: SeriesImages) -> SeriesImages:
    """The series flipped left-right (the last axis), every channel alike."""

    def flip(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array[..., ::-1])

    return dataclasses.replace(
        images,
        image=flip(images.image),
        brain=flip(images.brain),
        above=flip(images.above),
        below=flip(images.below),
    )


def repaint_differences(
    images: SeriesImages,
    sampler: InpaintSampler,
    settings: DetectSettings,
    generator: torch.Generator | None,
    plan: GridPlan,
) -> np.ndarray:
    """One pass of the grid over the series: differences from the re-paintings, per slice."""
    n_used, _, img_size = images.image.shape
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
        concat = make_conditioning(original, brain[s], above[s], below[s], mask, sampler.neighbours)
        inpainted = inpaint_batch(
            settings.strategy, sampler, original, concat, mask, generator=generator
        )
        diff = difference_in_window_units(original, inpainted, settings.sign) * mask
        per_grid.index_put_((s, grid_of_pass[p]), diff[:, 0], accumulate=True)
    maps = combine_grids(per_grid, settings.combine) * brain[:, 0]
    return maps.float().cpu().numpy()


def series_maps(
    images: SeriesImages,
    sampler: InpaintSampler | None,
    settings: DetectSettings,
    generator: torch.Generator | None,
    plan: GridPlan,
    hu_fractions: np.ndarray | None,
) -> np.ndarray:
    """The series' final maps: re-painting differences (or the HU baseline), HU-gated if asked.

    `hu_fractions` is the share of native pixels in the gate band (gate) or in the
    baseline band (`hu_threshold`), per used slice on the model grid.
    """
    if not settings.strategy.needs_model:
        assert hu_fractions is not None, "hu_threshold needs the HU volume"
        return (hu_fractions * images.brain).astype(np.float32)
    maps = detect_series(images, sampler, settings, generator, plan)
    if settings.hu_gate:
        assert hu_fractions is not None, "the HU gate needs the HU volume"
        maps = maps * hu_fractions
    return maps.astype(np.float32)


def plan_series(images: SeriesImages, settings: DetectSettings) -> GridPlan:
    """The grid plan of one series with the square sizes scaled to its image size."""
    sizes = scaled_sizes(settings.sizes_at_256, images.image.shape[-1])
    return plan_grid(images.brain, sizes, settings.offsets)


def expected_forwards(plan: GridPlan, sampler: InpaintSampler, strategy: Strategy) -> int:
    """UNet images a plan needs: patterns that hide brain x calls per pattern."""
    return len(plan.items) * strategy.forwards_per_image(sampler)


def series_forwards(
    images: SeriesImages, plan: GridPlan, sampler: InpaintSampler, settings: DetectSettings
) -> int:
    """UNet images `detect_series` makes for a series: its plan, and its mirror's if asked."""
    total = expected_forwards(plan, sampler, settings.strategy)
    if settings.mirror:
        mirrored = plan_series(mirror_images(images), settings)
        total += expected_forwards(mirrored, sampler, settings.strategy)
    return total


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

    Only `per_group` score rows per group are held, and the images are loaded only for
    the picked ones when they are drawn, so this works for any number of series.
    """

    def __init__(self, per_group: int, score: str = "score_top1pct") -> None:
        self.per_group = per_group
        self.score = score
        self._heaps: dict[str, list[tuple[float, int, dict[str, Any]]]] = {
            "bleed": [],
            "healthy": [],
        }
        self._counter = 0

    def offer(self, row: dict[str, Any]) -> None:
        if self.per_group <= 0:
            return
        heap = self._heaps["bleed" if int(row["any"]) else "healthy"]
        entry = (float(row[self.score]), self._counter, row)
        self._counter += 1
        if len(heap) < self.per_group:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def write(
        self, out_dir: Path, load: Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]
    ) -> list[Path]:
        """Draw the picks; `load(row)` gives the slice's CT (model scale) and its map."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for group, heap in self._heaps.items():
            for rank, (_, _, row) in enumerate(sorted(heap, key=lambda e: -e[0])):
                labels = [name for name in LABELS[:-1] if int(row[name])] or ["healthy"]
                title = (
                    f"{group} #{rank + 1}: {row['image_id']} ({row['series_uid']}, k={row['slice_index']})"
                    f" - {', '.join(labels)} - {self.score} {row[self.score]:.3f}"
                )
                path = out_dir / f"{group}_{rank + 1:02d}_{row['image_id']}.png"
                ct, anomaly = load(row)
                save_overlay(path, ct, anomaly, title)
                written.append(path)
        return written


# -- one part of the run: series computed into a store ---------------------------------


@dataclasses.dataclass
class PartResult:
    """What one part did: series computed now, series found done, and its wall time."""

    computed: list[str]
    reused: list[str]
    seconds: float
    forwards: int
    device: str


def series_fingerprints(
    manifest: pd.DataFrame,
    uids: Sequence[str],
    run_fp: str,
    *,
    root: Path,
    nifti_dir: Path | None,
    canvas: int | None,
    img_size: int,
    reads_hu: bool = False,
) -> dict[str, str]:
    """The fingerprint of each series in `uids` (its inputs under this run's settings).

    With `reads_hu` (the HU baseline, the HU gate) the HU volume's bytes are an input too.
    """
    by_series = dict(list(manifest.groupby("series_uid", sort=True)))
    prints = {}
    for uid in uids:
        rows = by_series[uid]
        n_slices = int(rows["n_slices"].iloc[0])
        affine = series_affine(uid, nifti_dir, canvas, img_size, n_slices)
        series_run = run_fp
        if reads_hu and nifti_dir is not None:
            series_run += shards.file_digest(Path(nifti_dir) / f"{uid}.nii.gz")
        prints[uid] = shards.series_fingerprint(series_run, rows, root, affine)
    return prints


def series_score_rows(rows: pd.DataFrame, images: SeriesImages, maps: np.ndarray) -> pd.DataFrame:
    """The series' rows of scores.csv: one per used slice, in slice order."""
    out = []
    for pos, (_, meta) in enumerate(rows[rows["use"]].iterrows()):
        row = {key: meta[key] for key in ("image_id", "series_uid", "patient_id", "split")}
        row["slice_index"] = int(meta["slice_index"])
        row.update(slice_scores(maps[pos], images.brain[pos] > 0))
        row.update({label: int(meta[label]) for label in LABELS})
        out.append(row)
    return pd.DataFrame(out, columns=list(SCORES_COLUMNS))


def run_part(
    manifest: pd.DataFrame,
    module,
    settings: DetectSettings,
    *,
    store: shards.SeriesStore,
    fingerprints: dict[str, str],
    run_fp: str = "",
    numerics: str = "",
    root: Path = Path("."),
    nifti_dir: Path | None = None,
    canvas: int | None = None,
    bf16: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    part_label: str = "0/1",
    net=None,
) -> PartResult:
    """Detect every series of `fingerprints` not yet done in `store`; each lands there whole.

    `module` may be a callable returning the module, so that a part with nothing left
    to do never loads the model. A series counts as done when its record has the same
    fingerprint and the same `numerics` (device type, precision, ...): results of one
    run are never computed half one way, half another. `net` runs the UNet on another
    backend (see `UNetRunner`).
    """
    store.root.mkdir(parents=True, exist_ok=True)  # visible from the start of the run
    pending = [
        uid for uid in sorted(fingerprints) if not store.is_done(uid, fingerprints[uid], numerics)
    ]
    reused = [uid for uid in sorted(fingerprints) if uid not in set(pending)]
    if not pending:
        return PartResult([], reused, 0.0, 0, "")
    if settings.needs_hu and (nifti_dir is None or canvas is None):
        raise ValueError(
            f"strategy {settings.strategy.name} / hu_gate {settings.hu_gate}: the HU volumes "
            "(nifti_dir) and the png canvas are needed"
        )
    by_series = dict(list(manifest.groupby("series_uid", sort=True)))
    if settings.strategy.needs_model:
        module = (
            module() if callable(module) and not isinstance(module, torch.nn.Module) else module
        )
        img_size = int(module.config.model.input_size)
        precision = "bf16" if bf16 else "fp32"
        runner = UNetRunner(
            module, precision=precision, channels_last=channels_last, compile=compile, net=net
        )
        sampler = InpaintSampler(
            module.diffusion,
            runner,
            ddim_steps=settings.strategy.ddim_steps,
            neighbours=spec_of(module).neighbours,
        )
        torch_device = runner.device
    else:  # the HU baseline: no model; the image size from the PNGs themselves
        img_size = manifest_png_size(manifest, root)
        runner, sampler, torch_device = None, None, torch.device("cpu")
    device = describe_device(torch_device)
    start_all = time.perf_counter()
    for uid in tqdm(
        pending, desc=f"detect series (part {part_label})", unit="series", disable=None
    ):
        start = time.perf_counter()
        series_rows = by_series[uid]
        images = load_series_images(series_rows, root, img_size)
        plan = plan_series(images, settings)
        expected = series_forwards(images, plan, sampler, settings) if sampler else 0
        before = runner.forwards if runner else 0
        fractions = None
        if settings.needs_hu:
            band = settings.gate_band if settings.strategy.needs_model else settings.baseline_band
            fractions = hu.series_band_fractions(
                hu.load_hu_volume(nifti_dir, uid), images.slice_index, band, canvas, img_size
            )
        with tqdm(total=expected, desc=f"  {uid}", unit="img", leave=False, disable=None) as bar:
            if runner:
                runner.progress = bar
            generator = series_generator(torch_device, settings.seed, uid)
            maps = series_maps(images, sampler, settings, generator, plan, fractions)
            if runner:
                runner.progress = None
        counted = (runner.forwards if runner else 0) - before
        if counted != expected:
            raise RuntimeError(
                f"{uid}: counted {counted} UNet images but the plan needs "
                f"{expected}: the sampler and Strategy.forwards_per_image disagree"
            )
        n_slices = int(series_rows["n_slices"].iloc[0])
        data = series_volume(maps, images.slice_index, n_slices)
        affine = series_affine(uid, nifti_dir, canvas, img_size, n_slices)
        record = {
            "series_uid": uid,
            "fingerprint": fingerprints[uid],
            "run_fingerprint": run_fp,
            "numerics": numerics,
            "seconds": time.perf_counter() - start,
            "forwards": expected,
            "slices": len(images.slice_index),
            "slices_empty_brain": int((images.brain.sum(axis=(1, 2)) == 0).sum()),
            "device": device,
            "part": part_label,
        }
        scores = series_score_rows(series_rows, images, maps)
        store.write(uid, nib.Nifti1Image(data, affine), scores, record)
    seconds = time.perf_counter() - start_all
    return PartResult(pending, reused, seconds, runner.forwards if runner else 0, device)


# -- the merge: the stage's outputs from the stores ------------------------------------


@dataclasses.dataclass
class RunResult:
    scores: pd.DataFrame
    metrics: dict[str, Any]


SCORES_DTYPES = {"image_id": str, "series_uid": str, "patient_id": str, "split": str}


def merge_detections(
    manifest: pd.DataFrame,
    located: dict[str, shards.Located],
    settings: DetectSettings,
    *,
    out_dir: Path,
    root: Path = Path("."),
    n_overlays: int = 8,
) -> RunResult:
    """Maps into `out_dir`, overlays, and the scores table and metrics, from the stores.

    The caller writes ``scores.csv`` and the metrics (it owns the atomic directory).
    """
    picker = OverlayPicker(n_overlays // 2)
    frames = []
    for uid in sorted(located):
        store = located[uid].store
        shards.link_or_copy(store.map_path(uid), out_dir / f"{uid}.nii.gz")
        frame = pd.read_csv(store.scores_path(uid), dtype=SCORES_DTYPES)
        if list(frame.columns) != list(SCORES_COLUMNS) or set(frame["series_uid"]) - {uid}:
            raise shards.MergeError(f"{store.scores_path(uid)}: not the score rows of series {uid}")
        frames.append(frame)
    scores = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORES_COLUMNS)
    )
    duplicated = scores["image_id"][scores["image_id"].duplicated()]
    if len(duplicated):
        raise shards.MergeError(f"image IDs scored twice: {list(duplicated[:5])}")
    for row in scores.to_dict("records"):
        picker.offer(row)
    paths = manifest.set_index("image_id")["image_path"]
    img_size = (
        nib.load(out_dir / f"{scores['series_uid'].iloc[0]}.nii.gz").shape[0] if len(scores) else 0
    )

    def load(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        ct = (
            slices_manifest.read_png(root / paths[row["image_id"]], img_size).astype(np.float32)
            / 127.5
            - 1
        )
        volume_data = np.asarray(nib.load(out_dir / f"{row['series_uid']}.nii.gz").dataobj)
        return ct, volume.slice_image(volume_data, int(row["slice_index"]))

    picker.write(out_dir / "overlays", load)
    records = [located[uid].record for uid in sorted(located)]
    seconds = [float(r["seconds"]) for r in records]
    forwards = sum(int(r["forwards"]) for r in records)
    seconds_total = float(sum(seconds))
    n_used = len(scores)
    metrics = {
        "strategy": settings.strategy.name,
        "strategy_detail": settings.strategy.describe(),
        "sign": settings.sign,
        "hu_gate": settings.hu_gate,
        "forwards_total": forwards,
        "forwards_per_slice": forwards / n_used if n_used else 0.0,
        "forwards_per_second": forwards / seconds_total if seconds_total > 0 else 0.0,
        "seconds_per_series": float(np.mean(seconds)) if seconds else 0.0,
        "seconds_total": seconds_total,
        "series": len(records),
        "slices": n_used,
        "slices_not_used": int((~manifest["use"]).sum()),
        "slices_empty_brain": sum(int(r["slices_empty_brain"]) for r in records),
        "device": ", ".join(sorted({r["device"] for r in records})),
        "img_size": img_size,
        "sizes_px": ",".join(str(s) for s in scaled_sizes(settings.sizes_at_256, img_size))
        if img_size
        else "",
        "parts": len({r["part"] for r in records}),
    }
    return RunResult(scores=scores, metrics=metrics)


def run_detection(
    manifest: pd.DataFrame,
    module,
    settings: DetectSettings,
    *,
    out_dir: Path,
    root: Path = Path("."),
    nifti_dir: Path | None = None,
    canvas: int | None = None,
    n_overlays: int = 0,
    bf16: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    net=None,
) -> RunResult:
    """Every series of `manifest` in this process, maps and overlays into `out_dir`.

    The library entry for callers that own their folder (predict, benchmarks): the same
    per-series computation and merge as the detect stage, through a throw-away store.
    """
    import shutil

    out_dir = Path(out_dir)
    store = shards.SeriesStore(out_dir / ".series")
    if settings.strategy.needs_model:
        img_size = int(module.config.model.input_size)
    else:
        img_size = manifest_png_size(manifest, Path(root))
    run_fp = shards.run_fingerprint(
        {"settings": dataclasses.asdict(settings), "canvas": canvas}, []
    )
    uids = sorted(manifest["series_uid"].unique())
    prints = series_fingerprints(
        manifest, uids, run_fp, root=Path(root), nifti_dir=nifti_dir, canvas=canvas,
        img_size=img_size, reads_hu=settings.needs_hu,
    )  # fmt: skip
    run_part(
        manifest, module, settings, store=store, fingerprints=prints, run_fp=run_fp,
        root=Path(root), nifti_dir=nifti_dir, canvas=canvas, bf16=bf16,
        channels_last=channels_last, compile=compile, net=net,
    )  # fmt: skip
    located = shards.locate_series([store], prints)
    result = merge_detections(
        manifest, located, settings, out_dir=out_dir, root=Path(root), n_overlays=n_overlays
    )
    shutil.rmtree(store.root)
    return result


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


def manifest_png_size(manifest: pd.DataFrame, root: Path) -> int:
    """Side of the manifest's (square) model-grid PNGs: the grid when no model says it."""
    return int(slices_manifest.read_png(root / str(manifest["image_path"].iloc[0])).shape[0])


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"
