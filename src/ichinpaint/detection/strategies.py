"""How a batch of hidden squares is re-painted: the study's RePaint and two cheaper variants.

All three reuse the same trained model and the same sampler; they differ only in
where the reverse process starts and how many network calls it makes per image:

- ``repaint`` (the study): DDIM from the top of the schedule (pure noise in the hidden
  region) with RePaint resampling; ``ddim_steps * jump_n_sample``-ish calls.
- ``partial`` (AnoDDPM / THOR): the original noised to ``start_fraction`` of T, then
  DDIM down from there; fewer calls, and the hidden region keeps a trace of the
  original's coarse structure.
- ``onestep`` (patched-DDPM style): one clean-image prediction per noise level,
  averaged; ``len(noise_levels)`` calls.

``hu_threshold`` is the no-model baseline (``ichinpaint.detection.hu``): it re-paints
nothing and makes no call; it lives here so every strategy is chosen the same way.
"""

from __future__ import annotations

import dataclasses

import torch

from ichinpaint.detection.sampler import InpaintSampler, count_denoising_steps, repaint_schedule

STRATEGIES: tuple[str, ...] = ("repaint", "partial", "onestep", "hu_threshold")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A re-painting strategy and its settings (unused settings are ignored)."""

    name: str = "repaint"
    ddim_steps: int = 50
    start_fraction: float = 0.5
    jump_length: int = 1
    jump_n_sample: int = 1
    noise_levels: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; choose one of {STRATEGIES}")
        object.__setattr__(self, "noise_levels", tuple(float(v) for v in self.noise_levels))

    @property
    def needs_model(self) -> bool:
        """False for the HU baseline: it never loads or calls the inpainter."""
        return self.name != "hu_threshold"

    def start_index(self, sampler: InpaintSampler) -> int | None:
        """Where the reverse process starts (None = the top, from pure noise)."""
        if self.name == "partial":
            return sampler.start_index(self.start_fraction)
        return None

    def forwards_per_image(self, sampler: InpaintSampler) -> int:
        """UNet calls per hidden pattern: the analytical count the runner must match."""
        if not self.needs_model:
            return 0
        if self.name == "onestep":
            return len(self.noise_levels)
        start = self.start_index(sampler)
        top = len(sampler.timesteps) - 1
        schedule = repaint_schedule(
            top if start is None else start, self.jump_length, self.jump_n_sample
        )
        return count_denoising_steps(schedule)

    def describe(self) -> str:
        if not self.needs_model:
            return self.name
        if self.name == "onestep":
            return f"onestep(levels={list(self.noise_levels)})"
        resample = (
            f", jump {self.jump_length}x{self.jump_n_sample}" if self.jump_n_sample > 1 else ""
        )
        start = f", start {self.start_fraction:g}T" if self.name == "partial" else ""
        return f"{self.name}(DDIM{self.ddim_steps}{start}{resample})"


def inpaint_batch(
    strategy: Strategy,
    sampler: InpaintSampler,
    original: torch.Tensor,
    concat: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Re-paint the hidden region of a batch with `strategy`; known pixels are returned unchanged."""
    if strategy.name == "onestep":
        return sampler.onestep(
            original, concat, mask, noise_levels=strategy.noise_levels, generator=generator
        )
    return sampler.inpaint(
        original,
        concat,
        mask,
        start_index=strategy.start_index(sampler),
        jump_length=strategy.jump_length,
        jump_n_sample=strategy.jump_n_sample,
        generator=generator,
    )
