"""The inpainting model and its input contract, shared by training and detection.

Input contract (written into ``models/inpainter.json`` beside the weights):

- images are brain-window PNGs (0..255 = 0..80 HU) scaled to [-1, 1] by
  ``png / 127.5 - 1``, shape ``(img_size, img_size)``, one channel;
- the UNet sees the noisy image plus ``len(CONDITIONING)`` concatenated channels in
  this order: brain mask {0,1}, slice above [-1,1], slice below [-1,1], the image
  with the inpainting region blanked to ``BLANK_VALUE`` [-1,1], the inpainting mask
  {0,1} (1 = hidden, to be re-painted);
- how the neighbouring slices are shown is the spec's ``neighbours`` (``NEIGHBOURS``):
  ``keep`` whole, ``hide`` blanked where the inpainting mask hides the slice (a bleed
  spans adjacent 5 mm slices, so a visible neighbour can leak the hidden bleed), or
  ``none`` (both channels blank);
- the model is mediffusion's ``DiffusionModule`` (UNet, cosine schedule, velocity
  prediction, learned variance), built from an :class:`InpainterSpec`;
- the diffusion noise is the spec's ``noise_cell``: 1 = white Gaussian noise per pixel
  (mediffusion's); k > 1 = coarse noise, Gaussian on a grid of k-pixel cells, bilinearly
  interpolated and scaled back to unit variance at every pixel (:func:`draw_noise`). A
  model trained on coarse noise learns to remove blob-sized changes, as a bleed is
  (Kascenas' denoising autoencoder, AnoDDPM's simplex noise); detection draws the same.

Checkpoints hold a plain ``state_dict`` of tensors (the EMA weights) so they load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ichinpaint.io import atomic_path

CONDITIONING: tuple[str, ...] = ("brain_mask", "above", "below", "known_image", "inpaint_mask")
BLANK_VALUE = 0.0  # value written into the hidden region of the "known_image" channel
NEIGHBOURS: tuple[str, ...] = ("keep", "hide", "none")
CONTRACT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class InpainterSpec:
    """Everything needed to rebuild the network: model size and diffusion settings."""

    img_size: int = 64
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)  # downsampling factors with attention
    num_heads: int = 4
    dropout: float = 0.0
    timesteps: int = 1000
    schedule_name: str = "cosine"
    mean_type: str = "VELOCITY"
    var_type: str = "LEARNED_RANGE"
    lr: float = 2e-4
    # How the slices above and below are shown (NEIGHBOURS); part of the input contract,
    # so detection reads it from the checkpoint's spec, never from its own settings.
    neighbours: str = "keep"
    # The diffusion noise (draw_noise): also part of the contract, read from the spec.
    noise_cell: int = 1

    def __post_init__(self) -> None:
        if self.neighbours not in NEIGHBOURS:
            raise ValueError(f"neighbours must be one of {NEIGHBOURS}, got {self.neighbours!r}")
        if not 1 <= self.noise_cell <= self.img_size:
            raise ValueError(f"noise_cell must be in [1, img_size], got {self.noise_cell}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InpainterSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("channel_mult", "attention_resolutions"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def mediffusion_config(spec: InpainterSpec) -> dict[str, Any]:
    """The mediffusion config (merged over its defaults) for this spec."""
    levels = len(spec.channel_mult)
    return {
        "diffusion": {
            "timesteps": spec.timesteps,
            "schedule_name": spec.schedule_name,
            "mean_type": spec.mean_type,
            "var_type": spec.var_type,
        },
        "optimizer": {"lr": spec.lr, "type": "torch.optim.AdamW"},
        "validation": {"classifier_cond_scale": 0, "protocol": "DDIM10"},
        "model": {
            "input_size": spec.img_size,
            "dims": 2,
            "in_channels": 1 + len(CONDITIONING),
            "out_channels": 2 if spec.var_type.startswith("LEARNED") else 1,
            "concat_channels": len(CONDITIONING),
            "model_channels": spec.model_channels,
            "channel_mult": list(spec.channel_mult),
            "num_res_blocks": [spec.num_res_blocks] * levels,
            "attention_resolutions": list(spec.attention_resolutions),
            "num_heads": spec.num_heads,
            "dropout": spec.dropout,
            "num_classes": 0,
        },
    }


def build_module(spec: InpainterSpec, module_class: type | None = None, **module_kwargs: Any):
    """A fresh mediffusion ``DiffusionModule`` for `spec` (extra kwargs go to its constructor).

    `module_class` lets training build its ``DiffusionModule`` subclass from the same config.
    """
    from mediffusion import DiffusionModule
    from omegaconf import OmegaConf

    # DiffusionModule only takes a config *file*; write it to a temporary one.
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="ichinpaint-model-")
    os.close(fd)
    try:
        OmegaConf.save(OmegaConf.create(mediffusion_config(spec)), path)
        return (module_class or DiffusionModule)(path, **module_kwargs)
    finally:
        os.unlink(path)


def make_conditioning(
    image: torch.Tensor,
    brain_mask: torch.Tensor,
    above: torch.Tensor,
    below: torch.Tensor,
    inpaint_mask: torch.Tensor,
    neighbours: str = "keep",
) -> torch.Tensor:
    """Stack the conditioning channels in contract order; all inputs ``(B, 1, H, W)``."""
    known = image * (1 - inpaint_mask) + BLANK_VALUE * inpaint_mask
    if neighbours == "hide":
        above = above * (1 - inpaint_mask) + BLANK_VALUE * inpaint_mask
        below = below * (1 - inpaint_mask) + BLANK_VALUE * inpaint_mask
    elif neighbours == "none":
        above = torch.full_like(above, BLANK_VALUE)
        below = torch.full_like(below, BLANK_VALUE)
    elif neighbours != "keep":
        raise ValueError(f"neighbours must be one of {NEIGHBOURS}, got {neighbours!r}")
    return torch.cat([brain_mask, above, below, known, inpaint_mask], dim=1)


def conditioning_channel(concat: torch.Tensor, name: str) -> torch.Tensor:
    """The channel `name` of a conditioning stack ``(B, len(CONDITIONING), H, W)``, kept 4-D."""
    index = CONDITIONING.index(name)
    return concat[:, index : index + 1]


def unet_forward(module, x_t: torch.Tensor, t: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
    """One UNet call with the conditioning concatenated (the unit detection counts)."""
    return module.model(x_t, t, concat=concat)


def save_inpainter(
    ckpt_path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    spec: InpainterSpec,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write weights (plain tensors) to `ckpt_path` and the spec + contract beside it (.json)."""
    clean = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    with atomic_path(ckpt_path) as tmp:
        torch.save(clean, tmp)
    meta = {
        "spec": spec.to_dict(),
        "contract": {
            "version": CONTRACT_VERSION,
            "image": "brain window PNG (center 40 HU, width 80 HU) scaled to [-1, 1] by png/127.5-1",
            "shape": [1, spec.img_size, spec.img_size],
            "conditioning": list(CONDITIONING),
            "blank_value": BLANK_VALUE,
            "inpaint_mask": "1 = hidden region to re-paint",
            "neighbours": spec.neighbours,
            "noise_cell": spec.noise_cell,
        },
        **(extra or {}),
    }
    with atomic_path(config_path_for(ckpt_path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def config_path_for(ckpt_path: str | os.PathLike) -> Path:
    return Path(ckpt_path).with_suffix(".json")


def load_inpainter(ckpt_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the module from the JSON beside `ckpt_path` and load its weights safely."""
    ckpt_path = Path(ckpt_path)
    meta_path = config_path_for(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: no checkpoint (run `dvc repro train`)")
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: model config missing beside {ckpt_path}")
    meta = json.loads(meta_path.read_text())
    if meta.get("contract", {}).get("version") != CONTRACT_VERSION:
        raise ValueError(
            f"{meta_path}: input contract version {meta.get('contract')} is not {CONTRACT_VERSION}"
        )
    spec = InpainterSpec.from_dict(meta["spec"])
    module = build_module(spec)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.inpainter_spec = spec  # the contract travels with the weights (e.g. `neighbours`)
    return module.to(device).eval(), spec


def draw_noise(
    shape: Sequence[int],
    cell: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard-normal noise of `shape` (``..., H, W``): white for ``cell == 1``, else
    coarse: N(0, 1) at the corners of `cell`-pixel cells (the grid at a random offset),
    interpolated bilinearly and divided by the interpolation's standard deviation, so
    every pixel has variance 1 as the diffusion schedule assumes. `generator`'s device
    must be `device`."""
    device = torch.device(device) if device is not None else None
    if cell == 1:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    *lead, h, w = shape
    grid = torch.randn((*lead, h // cell + 2, w // cell + 2), generator=generator, device=device)
    offset = torch.randint(cell, (2,), generator=generator, device=device).tolist()

    def axis(n: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = (torch.arange(n, device=device, dtype=torch.float32) + shift) / cell
        return pos.floor().long(), pos - pos.floor()

    (iy, u), (ix, v) = axis(h, offset[0]), axis(w, offset[1])
    rows0, rows1 = grid.index_select(-2, iy), grid.index_select(-2, iy + 1)
    u, v = u[:, None], v[None, :]
    mixed = (
        (1 - u) * (1 - v) * rows0.index_select(-1, ix)
        + (1 - u) * v * rows0.index_select(-1, ix + 1)
        + u * (1 - v) * rows1.index_select(-1, ix)
        + u * v * rows1.index_select(-1, ix + 1)
    )
    std = (((1 - u) ** 2 + u**2) * ((1 - v) ** 2 + v**2)).sqrt()
    return (mixed / std).to(dtype)


def spec_of(module) -> InpainterSpec:
    """The spec a module was loaded with (a freshly built one: the defaults)."""
    return getattr(module, "inpainter_spec", None) or InpainterSpec()


def scaled_sizes(sizes_at_256: Sequence[int], img_size: int) -> list[int]:
    """Square sizes given at 256 px, scaled to `img_size` (at least 2 px, de-duplicated)."""
    scaled = [max(2, round(s * img_size / 256)) for s in sizes_at_256]
    return sorted(set(scaled))
