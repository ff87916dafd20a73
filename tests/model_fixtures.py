"""A real, untrained, small inpainting module for tests."""

from __future__ import annotations

import torch

from ichinpaint import model


def tiny_inpainter(img_size: int = 16, seed: int = 0):
    """A real, untrained, small inpainting module and its spec."""
    torch.manual_seed(seed)
    spec = model.InpainterSpec(
        img_size=img_size, model_channels=32, channel_mult=(1, 2), attention_resolutions=()
    )
    return model.build_module(spec).eval(), spec
