"""PyTorch's fused attention in place of mediffusion's einsum attention (a speed switch).

mediffusion's ``QKVAttentionLegacy`` / ``QKVAttention`` build the full ``T x T`` weight
matrix with two einsums and a softmax; at 256 px the attention layers at 32 x 32
tokens make that a memory-bound detour. ``torch.nn.functional.scaled_dot_product_attention``
computes the same thing (flash / memory-efficient kernels on a GPU). The modules have no
weights, so swapping them leaves ``state_dict`` and checkpoints unchanged; outputs match
within floating-point rounding (tests/test_fastattention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_CHOICES: tuple[str, ...] = ("einsum", "sdpa")


class SDPAttentionLegacy(nn.Module):
    """mediffusion's ``QKVAttentionLegacy`` (heads split before q, k, v) through SDPA."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (bs * heads, length, ch); SDPA's default scale is 1 / sqrt(ch), as mediffusion's
        return out.transpose(1, 2).reshape(bs, -1, length)


class SDPAttention(nn.Module):
    """mediffusion's ``QKVAttention`` (q, k, v split before heads) through SDPA."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = (
            t.reshape(bs, self.n_heads, ch, length).transpose(2, 3) for t in qkv.chunk(3, dim=1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (bs, heads, length, ch)
        return out.transpose(2, 3).reshape(bs, -1, length)


def use_attention(network: nn.Module, kind: str) -> int:
    """Switch every attention module of a mediffusion UNet to `kind`; returns how many.

    ``einsum`` restores mediffusion's own modules, so the switch goes both ways.
    """
    from mediffusion.modules.attention import QKVAttention, QKVAttentionLegacy

    if kind not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention {kind!r}; choose one of {ATTENTION_CHOICES}")
    swaps = {
        "sdpa": {QKVAttentionLegacy: SDPAttentionLegacy, QKVAttention: SDPAttention},
        "einsum": {SDPAttentionLegacy: QKVAttentionLegacy, SDPAttention: QKVAttention},
    }[kind]
    count = 0
    for parent in network.modules():
        child = getattr(parent, "attention", None)
        if isinstance(child, nn.Module) and type(child) in swaps:
            parent.attention = swaps[type(child)](child.n_heads)
            count += 1
        elif isinstance(child, tuple(swaps.values())):
            count += 1  # already of the wanted kind
    return count
