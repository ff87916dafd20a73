"""Inpainting samplers on top of mediffusion's diffusion object, with every UNet call counted.

mediffusion's own ``DDIMSolver.sample`` does plain replacement inpainting but calls the
network one image batch at a time, through its own loop, without RePaint resampling
and without a way to count or speed up the calls. Here the arithmetic stays
mediffusion's (``module.diffusion``: schedule, ``q_sample``, ``p_mean_variance`` with
velocity mean and learned-range variance), while the loop and the network calls are
ours, so that:

- every image that goes through the UNet is counted (:class:`UNetRunner`),
- batches can be as large as memory allows, in bf16 / channels_last / compiled form on
  a GPU,
- the reverse process can start part-way (``start_index``) and resample (RePaint
  ``jump_length`` / ``jump_n_sample``).

Conventions: ``mask`` is 1 where the image is hidden and re-painted (mediffusion's
``mask`` as well); DDIM steps are indexed ``0..n_steps-1`` (index ``i`` is the
original timestep ``timesteps[i]``) and ``-1`` is the clean image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ichinpaint.model import InpainterSpec, draw_noise, unet_forward


def ddim_timesteps(num_timesteps: int, n_steps: int) -> list[int]:
    """The original timesteps mediffusion's ``DDIM<n_steps>`` visits, ascending.

    Same striding as ``mediffusion.utils.diffusion.space_timesteps("DDIM<n>")`` (an
    integer stride from 0), so our DDIM and mediffusion's visit the same steps.
    """
    from mediffusion.utils.diffusion import space_timesteps

    if not 1 <= n_steps <= num_timesteps:
        raise ValueError(f"ddim_steps must be in 1..{num_timesteps}, got {n_steps}")
    try:
        return sorted(space_timesteps(num_timesteps, f"DDIM{n_steps}"))
    except ValueError as error:
        raise ValueError(
            f"ddim_steps={n_steps}: no integer stride gives exactly that many of "
            f"{num_timesteps} timesteps (try a divisor-friendly number such as 10, 25, 50)"
        ) from error


def repaint_schedule(start_index: int, jump_length: int = 1, jump_n_sample: int = 1) -> list[int]:
    """DDIM indices visited from `start_index` down to -1 (clean), with RePaint jumps.

    After landing on index ``j`` (a multiple of `jump_length`), the state is re-noised
    `jump_length` steps up and denoised again, ``jump_n_sample - 1`` times, as in
    RePaint's ``get_schedule_jump``. A step to a lower index is one UNet call; a step
    to a higher index is a forward (noising) jump and costs no network call.
    """
    if jump_length < 1 or jump_n_sample < 1:
        raise ValueError(
            f"jump_length and jump_n_sample must be >= 1, got {jump_length}, {jump_n_sample}"
        )
    if start_index < 0:
        raise ValueError(f"start_index must be >= 0, got {start_index}")
    n_states = start_index + 1
    jumps = {j: jump_n_sample - 1 for j in range(0, n_states - jump_length, jump_length)}
    t = n_states
    visited: list[int] = []
    while t >= 1:
        t -= 1
        visited.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                visited.append(t)
    visited.append(-1)
    return visited


def count_denoising_steps(schedule: Sequence[int]) -> int:
    """UNet calls per image along a schedule: one per step down."""
    return sum(1 for a, b in zip(schedule, schedule[1:], strict=False) if b < a)


PRECISIONS: tuple[str, ...] = ("fp32", "bf16-autocast", "bf16")


class UNetRunner:
    """Calls the UNet of a mediffusion module and counts the images that go through it.

    `precision` (CUDA only; the CPU always runs float32): ``bf16-autocast`` keeps fp32
    weights under autocast; ``bf16`` converts the UNet's weights to bf16 in place
    (mediffusion's GroupNorm still normalises in float32), the fastest on tensor
    cores. `channels_last` helps on CPU as well (measured in
    benchmarks/bench_detect.py); `compile` wraps the UNet in ``torch.compile``; `net`
    replaces the module's UNet by any ``net(x_t, t, concat=...)`` (the onnxruntime
    backend, `ichinpaint.onnxunet.onnx_net`). The
    output is always float32 so that the diffusion arithmetic (float64 schedule
    buffers) is the same whatever the precision of the network.
    """

    def __init__(
        self,
        module,
        *,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool = False,
        net=None,
    ) -> None:
        if net is not None:  # another backend (e.g. onnxruntime): float32, inputs as given
            precision, channels_last, compile = "fp32", False, False
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.module = module
        self.device = next(module.parameters()).device
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.channels_last = channels_last
        if self.precision == "bf16":
            module.model.to(torch.bfloat16)
        if channels_last:
            module.model.to(memory_format=torch.channels_last)
        self._input_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if net is not None:
            self._net = net
        else:
            self._net = torch.compile(module.model) if compile else module.model
        self.forwards = 0  # images through the UNet
        self.calls = 0  # batched calls
        self.progress = None  # optional tqdm bar, advanced by images

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
        x_t, concat = x_t.to(self._input_dtype), concat.to(self._input_dtype)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
            concat = concat.contiguous(memory_format=torch.channels_last)
        autocast = self.precision == "bf16-autocast"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = unet_forward(_NetView(self._net), x_t, t, concat)
        self.forwards += int(x_t.shape[0])
        self.calls += 1
        if self.progress is not None:
            self.progress.update(int(x_t.shape[0]))
        return out.float().contiguous()


class _NetView:
    # unet_forward expects a module with a `.model`; this lets it call the compiled net.
    def __init__(self, net) -> None:
        self.model = net


class InpaintSampler:
    """DDIM / RePaint / one-step inpainting with mediffusion's diffusion arithmetic.

    `diffusion` is ``module.diffusion`` (a ``GaussianDiffusionBase`` over the full
    training schedule, e.g. 1000 steps); `unet` calls the network. The conditioning
    channels (``concat``) are fixed for a batch: they already hold everything outside
    the hidden region, so only the noisy image channel changes along the chain.
    `spec` is the model's contract (``ichinpaint.model.InpainterSpec``; default: the
    default model's): the conditioning is built, and the noise drawn
    (``ichinpaint.model.draw_noise``), as in training.
    """

    def __init__(
        self,
        diffusion,
        unet: UNetRunner,
        ddim_steps: int = 10,
        spec: InpainterSpec | None = None,
    ) -> None:
        self.diffusion = diffusion
        self.spec = spec or InpainterSpec()
        self.unet = unet
        self.timesteps = ddim_timesteps(diffusion.num_timesteps, ddim_steps)
        self.alphas_cumprod = diffusion.alphas_cumprod.detach().to("cpu", torch.float64)

    @property
    def neighbours(self) -> str:
        return self.spec.neighbours

    @property
    def noise_cell(self) -> int:
        return self.spec.noise_cell

    # -- single operations -------------------------------------------------------------

    def _t(self, timestep: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((like.shape[0],), int(timestep), dtype=torch.long, device=like.device)

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return draw_noise(x.shape, self.noise_cell, generator, device=x.device, dtype=x.dtype)

    def q_sample(
        self, x0: torch.Tensor, timestep: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The original noised to `timestep` (float32): the known region at that step."""
        noise = self.noise_like(x0, generator)
        return self.diffusion.q_sample(x0, self._t(timestep, x0), noise=noise).to(x0.dtype)

    def predict_x0(self, x_t: torch.Tensor, timestep: int, concat: torch.Tensor) -> torch.Tensor:
        """One UNet call: the clean-image prediction (clipped to [-1, 1]) from `x_t`."""

        def model(x, t, **_):
            return self.unet(x, t, concat)

        out = self.diffusion.p_mean_variance(model, x_t, self._t(timestep, x_t), clip_denoised=True)
        return out["pred_xstart"].to(x_t.dtype)

    def ddim_step(
        self, x_t: torch.Tensor, index: int, concat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic DDIM (eta = 0) from step `index` to `index - 1`; returns (x_prev, x0)."""
        t = self.timesteps[index]
        x0 = self.predict_x0(x_t, t, concat)
        eps = self.diffusion._predict_eps_from_xstart(x_t, self._t(t, x_t), x0)
        a_prev = self.alphas_cumprod[self.timesteps[index - 1]] if index > 0 else 1.0
        a_prev = torch.as_tensor(a_prev, dtype=torch.float64)
        x_prev = x0 * a_prev.sqrt() + (1 - a_prev).sqrt() * eps
        return x_prev.to(x_t.dtype), x0

    def jump_up(
        self, x: torch.Tensor, index: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """RePaint's forward jump: re-noise a state at `index` to `index + 1`."""
        a_cur = self.alphas_cumprod[self.timesteps[index]] if index >= 0 else 1.0
        ratio = float(self.alphas_cumprod[self.timesteps[index + 1]] / a_cur)
        return (ratio**0.5) * x + ((1 - ratio) ** 0.5) * self.noise_like(x, generator)

    # -- whole chains ------------------------------------------------------------------

    def start_index(self, start_fraction: float) -> int:
        """The DDIM index whose timestep is the last one at or below `start_fraction` of T."""
        if not 0 < start_fraction <= 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction}")
        limit = start_fraction * self.diffusion.num_timesteps
        return max(i for i, t in enumerate(self.timesteps) if t <= limit or i == 0)

    def inpaint(
        self,
        original: torch.Tensor,
        concat: torch.Tensor,
        mask: torch.Tensor,
        *,
        start_index: int | None = None,
        jump_length: int = 1,
        jump_n_sample: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Re-paint the ``mask == 1`` region of `original` (``(B, 1, H, W)`` in [-1, 1]).

        From the top (``start_index=None``) the chain starts from pure noise (the
        study's RePaint); from an intermediate index it starts from the original noised
        to that step (AnoDDPM/THOR style ``partial``). Before every UNet call the known
        region is the original re-noised to that step, the hidden region the model's
        own sample; after the last step the known region is the original itself.
        """
        top = len(self.timesteps) - 1
        start = top if start_index is None else int(start_index)
        if not 0 <= start <= top:
            raise ValueError(f"start_index must be in 0..{top}, got {start}")
        schedule = repaint_schedule(start, jump_length, jump_n_sample)
        if start == top:
            x = self.noise_like(original, generator)
        else:
            x = self.q_sample(original, self.timesteps[start], generator)
        for current, following in zip(schedule, schedule[1:], strict=False):
            if following > current:
                x = self.jump_up(x, current, generator)
                continue
            known = self.q_sample(original, self.timesteps[current], generator)
            x = (x * mask + known * (1 - mask)).to(original.dtype)
            x, _ = self.ddim_step(x, current, concat)
        return (x * mask + original * (1 - mask)).to(original.dtype)

    def onestep(
        self,
        original: torch.Tensor,
        concat: torch.Tensor,
        mask: torch.Tensor,
        *,
        noise_levels: Sequence[float],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean single-step clean-image prediction from the original noised to each level.

        Levels are fractions of the training schedule (0.5 = timestep T/2). The hidden
        region is re-painted with that mean; the known region stays the original.
        """
        if not noise_levels:
            raise ValueError("onestep needs at least one noise level")
        total = torch.zeros_like(original)
        for level in noise_levels:
            if not 0 < level <= 1:
                raise ValueError(f"noise levels must be in (0, 1], got {level}")
            t = min(round(level * self.diffusion.num_timesteps), self.diffusion.num_timesteps - 1)
            x_t = self.q_sample(original, t, generator)
            total += self.predict_x0(x_t, t, concat)
        mean = total / len(noise_levels)
        return (mean * mask + original * (1 - mask)).to(original.dtype)
