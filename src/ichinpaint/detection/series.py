"""One series through the model: the grid plan, batched re-painting, the HU gate.

All of a series' (used slice x grid pass) patterns go through the strategy's sampler in
batches of `batch_size`, whatever slice, square size, shift or pass they come from: on
a GPU, large mixed batches are what makes the 25-minutes-per-series study grid fast.
Unused slices (``use == False``) are never inpainted and stay zero.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ichinpaint.detection import hu
from ichinpaint.detection.anomaly import combine_grids, difference_in_window_units
from ichinpaint.detection.inputs import SeriesImages, manifest_png_size
from ichinpaint.detection.sampler import InpaintSampler, UNetRunner
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.detection.strategies import Strategy
from ichinpaint.grid import GridPlan, plan_grid
from ichinpaint.model import make_conditioning, scaled_sizes, spec_of


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


# The series as one grid pass sees it (itself, or its mirror image) and that pass's plan.
SeriesPass = tuple[SeriesImages, GridPlan]


def series_passes(images: SeriesImages, settings: DetectSettings) -> list[SeriesPass]:
    """The series with its grid plan, then (``settings.mirror``) its mirror image with its own."""
    passes = [(images, plan_series(images, settings))]
    if settings.mirror:
        flipped = mirror_images(images)
        passes.append((flipped, plan_series(flipped, settings)))
    return passes


@torch.inference_mode()
def detect_series(
    images: SeriesImages,
    sampler: InpaintSampler,
    settings: DetectSettings,
    generator: torch.Generator | None = None,
    passes: list[SeriesPass] | None = None,
) -> np.ndarray:
    """Anomaly maps ``(n_used, H, W)`` (window units, zero outside the brain) of one series.

    With ``settings.mirror`` the mean of the maps of the series and of its mirror image.
    """
    passes = passes or series_passes(images, settings)
    maps = [repaint_differences(seen, sampler, settings, generator, plan) for seen, plan in passes]
    if settings.mirror:
        maps[1] = maps[1][..., ::-1]  # back to the series' own orientation
    return sum(maps) / len(maps)


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
    strategy = settings.sampling()
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
        inpainted = strategy.inpaint(sampler, original, concat, mask, generator=generator)
        diff = difference_in_window_units(original, inpainted, settings.sign) * mask
        per_grid.index_put_((s, grid_of_pass[p]), diff[:, 0], accumulate=True)
    maps = combine_grids(per_grid, settings.combine) * brain[:, 0]
    return maps.float().cpu().numpy()


def series_maps(
    images: SeriesImages,
    sampler: InpaintSampler | None,
    settings: DetectSettings,
    generator: torch.Generator | None,
    passes: list[SeriesPass],
    hu_fractions: np.ndarray | None,
) -> np.ndarray:
    """The series' final maps: re-painting differences (or the HU baseline), HU-gated if asked.

    `hu_fractions` is the share of native pixels in the gate band (gate) or in the
    baseline band (`hu_threshold`), per used slice on the model grid.
    """
    if not settings.needs_model:
        assert hu_fractions is not None, "hu_threshold needs the HU volume"
        return (hu_fractions * images.brain).astype(np.float32)
    maps = detect_series(images, sampler, settings, generator, passes)
    if settings.hu_gate:
        assert hu_fractions is not None, "the HU gate needs the HU volume"
        maps = maps * hu_fractions
    return maps.astype(np.float32)


def hu_fractions(
    settings: DetectSettings,
    nifti_dir: Path | None,
    uid: str,
    slice_index: list[int],
    img_size: int,
) -> np.ndarray | None:
    """Per used slice, the share of native pixels in the HU band the settings use: the
    gate band under the HU gate, the baseline band for `hu_threshold`; None otherwise."""
    if not settings.needs_hu:
        return None
    band = settings.gate_hu if settings.needs_model else settings.baseline_hu
    volume = hu.load_hu_volume(nifti_dir, uid)
    return hu.series_band_fractions(volume, slice_index, band, settings.canvas, img_size)


def plan_series(images: SeriesImages, settings: DetectSettings) -> GridPlan:
    """The grid plan of one series with the square sizes scaled to its image size."""
    sizes = scaled_sizes(settings.sizes, images.image.shape[-1])
    return plan_grid(images.brain, sizes, settings.offsets)


def series_forwards(
    passes: list[SeriesPass], sampler: InpaintSampler, settings: DetectSettings
) -> int:
    """UNet images `detect_series` makes over `passes` (the series, and its mirror if asked)."""
    strategy = settings.sampling()
    return sum(expected_forwards(plan, sampler, strategy) for _, plan in passes)


def expected_forwards(plan: GridPlan, sampler: InpaintSampler, strategy: Strategy) -> int:
    """UNet images a plan needs: patterns that hide brain x calls per pattern."""
    return len(plan.items) * strategy.forwards_per_image(sampler)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


@dataclasses.dataclass
class Detector:
    """The model side of a run, built once: the strategy, its sampler and the counted UNet.

    For the HU baseline there is no model: no runner, no sampler, and the image size is
    the PNGs' own.
    """

    settings: DetectSettings
    strategy: Strategy
    runner: UNetRunner | None
    sampler: InpaintSampler | None
    img_size: int
    device: torch.device

    @classmethod
    def build(cls, settings: DetectSettings, module, *, net=None, manifest=None, root=None):
        strategy = settings.sampling()
        if not strategy.needs_model:
            img_size = manifest_png_size(manifest, Path(root))
            return cls(settings, strategy, None, None, img_size, torch.device("cpu"))
        runner = UNetRunner(
            module,
            precision="bf16" if settings.bf16 else "fp32",
            channels_last=settings.channels_last,
            compile=settings.compile,
            net=net,
        )
        # The model's contract (neighbouring slices, noise) decides conditioning and noise.
        sampler = strategy.sampler(module.diffusion, runner, spec=spec_of(module))
        img_size = int(module.config.model.input_size)
        return cls(settings, strategy, runner, sampler, img_size, runner.device)

    @property
    def forwards(self) -> int:
        """UNet images so far in this run."""
        return self.runner.forwards if self.runner else 0

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    def series_maps(
        self, uid: str, images: SeriesImages, fractions: np.ndarray | None
    ) -> tuple[np.ndarray, int]:
        """One series' final maps and the UNet images they took (checked against the plan)."""
        passes = series_passes(images, self.settings)
        expected = series_forwards(passes, self.sampler, self.settings) if self.sampler else 0
        before = self.forwards
        with tqdm(total=expected, desc=f"  {uid}", unit="img", leave=False, disable=None) as bar:
            if self.runner:
                self.runner.progress = bar
            generator = series_generator(self.device, self.settings.seed, uid)
            maps = series_maps(images, self.sampler, self.settings, generator, passes, fractions)
            if self.runner:
                self.runner.progress = None
        counted = self.forwards - before
        if counted != expected:
            raise RuntimeError(
                f"{uid}: counted {counted} UNet images but the plan needs "
                f"{expected}: the sampler and the strategy's forwards_per_image disagree"
            )
        return maps, expected
