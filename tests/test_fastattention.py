"""SDPA attention swapped into a real mediffusion UNet gives mediffusion's outputs."""

import pytest
import torch

from ichinpaint import model
from ichinpaint.fastattention import SDPAttentionLegacy, use_attention


def attention_unet(seed: int = 0):
    torch.manual_seed(seed)
    spec = model.InpainterSpec(
        img_size=16, model_channels=32, channel_mult=(1, 2), attention_resolutions=(1, 2)
    )
    return model.build_module(spec).eval()


def forward(module, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 16, 16, generator=generator)
    concat = torch.randn(3, len(model.CONDITIONING), 16, 16, generator=generator)
    t = torch.tensor([10, 500, 990])
    with torch.inference_mode():
        return model.unet_forward(module, x, t, concat)


def test_sdpa_matches_einsum_and_switches_back():
    module = attention_unet()
    # mediffusion zero-initialises output layers (proj_out, the last conv): wake them up
    with torch.no_grad():
        for param in module.model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    reference = forward(module)
    swapped = use_attention(module.model, "sdpa")
    assert swapped >= 2
    assert any(isinstance(m, SDPAttentionLegacy) for m in module.model.modules())
    calls = []
    for m in module.model.modules():
        if isinstance(m, SDPAttentionLegacy):
            m.register_forward_hook(lambda _m, _i, out: calls.append(float(out.abs().mean())))
    fast = forward(module)
    assert len(calls) == swapped and min(calls) > 0  # every swapped module ran, not a no-op
    assert reference.abs().mean() > 0
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert module.state_dict().keys() == state.keys()  # checkpoints are unchanged
    assert use_attention(module.model, "einsum") == swapped
    torch.testing.assert_close(forward(module), reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="attention"):
        use_attention(module.model, "flash")
