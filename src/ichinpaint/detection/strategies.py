"""How a batch of hidden squares is re-painted: one object per strategy.

Like a diffusers scheduler, a strategy object holds its whole schedule (DDIM steps,
where the reverse process starts, RePaint jumps, noise levels) and answers every
question about it: which sampler it needs (`sampler`), how many UNet calls one hidden
pattern costs (`forwards_per_image`, which the runner checks against the count), how
to re-paint a batch (`inpaint`) and how to name itself in reports (`describe`). The
runner only holds the object; the sampler (`ichinpaint.detection.sampler`) only knows
DDIM arithmetic.

- `Repaint` (the study): DDIM from the top of the schedule (pure noise in the hidden
  region) with RePaint resampling; ``ddim_steps * jump_n_sample``-ish calls.
- `Partial` (AnoDDPM / THOR): the original noised to ``start_fraction`` of T, then
  DDIM down from there; fewer calls, and the hidden region keeps a trace of the
  original's coarse structure.
- `OneStep` (patched-DDPM style): one clean-image prediction per noise level,
  averaged; ``len(noise_levels)`` calls.
- `HuThreshold`: the no-model baseline (``ichinpaint.detection.hu``); it re-paints
  nothing and makes no call, and lives here so every strategy is chosen the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from ichinpaint.detection.sampler import InpaintSampler, count_denoising_steps, repaint_schedule
from ichinpaint.model import InpainterSpec


class Strategy:
    """The interface every strategy object offers (see the module docstring)."""

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True

    def sampler(self, diffusion, unet, spec: InpainterSpec | None = None) -> InpaintSampler:
        """The sampler this strategy runs on (its DDIM schedule), under the model's
        contract `spec` (how it sees the neighbouring slices, how its noise is drawn)."""
        return InpaintSampler(diffusion, unet, spec=spec)

    def forwards_per_image(self, sampler: InpaintSampler) -> int:
        """UNet calls per hidden pattern: the analytical count the runner must match."""
        raise NotImplementedError

    def inpaint(
        self,
        sampler: InpaintSampler,
        original: torch.Tensor,
        concat: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Re-paint the hidden region of a batch; known pixels are returned unchanged."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Repaint(Strategy):
    """DDIM from pure noise with RePaint resampling (the study)."""

    name: ClassVar[str] = "repaint"
    ddim_steps: int = 50
    jump_length: int = 1
    jump_n_sample: int = 1

    def sampler(self, diffusion, unet, spec: InpainterSpec | None = None) -> InpaintSampler:
        return InpaintSampler(diffusion, unet, self.ddim_steps, spec=spec)

    def start_index(self, sampler: InpaintSampler) -> int | None:
        """Where the reverse process starts (None = the top, from pure noise)."""
        return None

    def forwards_per_image(self, sampler: InpaintSampler) -> int:
        start = self.start_index(sampler)
        top = len(sampler.timesteps) - 1
        schedule = repaint_schedule(
            top if start is None else start, self.jump_length, self.jump_n_sample
        )
        return count_denoising_steps(schedule)

    def inpaint(self, sampler, original, concat, mask, generator=None) -> torch.Tensor:
        return sampler.inpaint(
            original,
            concat,
            mask,
            start_index=self.start_index(sampler),
            jump_length=self.jump_length,
            jump_n_sample=self.jump_n_sample,
            generator=generator,
        )

    def describe(self) -> str:
        resample = (
            f", jump {self.jump_length}x{self.jump_n_sample}" if self.jump_n_sample > 1 else ""
        )
        return f"{self.name}(DDIM{self.ddim_steps}{self._start_text()}{resample})"

    def _start_text(self) -> str:
        return ""


@dataclasses.dataclass(frozen=True)
class Partial(Repaint):
    """RePaint from the original noised to `start_fraction` of T (AnoDDPM / THOR)."""

    name: ClassVar[str] = "partial"
    start_fraction: float = 0.5

    def start_index(self, sampler: InpaintSampler) -> int | None:
        return sampler.start_index(self.start_fraction)

    def _start_text(self) -> str:
        return f", start {self.start_fraction:g}T"


@dataclasses.dataclass(frozen=True)
class OneStep(Strategy):
    """The mean clean-image prediction from the original noised to each level."""

    name: ClassVar[str] = "onestep"
    noise_levels: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_levels", tuple(float(v) for v in self.noise_levels))

    def forwards_per_image(self, sampler: InpaintSampler) -> int:
        return len(self.noise_levels)

    def inpaint(self, sampler, original, concat, mask, generator=None) -> torch.Tensor:
        return sampler.onestep(
            original, concat, mask, noise_levels=self.noise_levels, generator=generator
        )

    def describe(self) -> str:
        return f"onestep(levels={list(self.noise_levels)})"


@dataclasses.dataclass(frozen=True)
class HuThreshold(Strategy):
    """No model: the map is the share of each pixel in the acute-blood HU band."""

    name: ClassVar[str] = "hu_threshold"
    needs_model: ClassVar[bool] = False

    def forwards_per_image(self, sampler: InpaintSampler | None) -> int:
        return 0

    def inpaint(self, sampler, original, concat, mask, generator=None) -> torch.Tensor:
        raise TypeError("hu_threshold re-paints nothing (ichinpaint.detection.hu makes its map)")


STRATEGY_TYPES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Repaint, Partial, OneStep, HuThreshold)
}
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_TYPES)


def make_strategy(name: str, **settings: Any) -> Strategy:
    """The strategy `name` with the settings it uses (the others are ignored)."""
    if name not in STRATEGY_TYPES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    kind = STRATEGY_TYPES[name]
    used = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in settings.items() if k in used})
