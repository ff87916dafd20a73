"""The denoising loss, optionally weighted towards the hidden squares.

mediffusion's ``training_losses`` averages the error over the whole image. An
inpainter gets the visible pixels in its conditioning, so most of that average is a
copy task it learns early; the re-painting that detection relies on is the small
hidden share (1/9 of the image for a grid pass, less for random squares). With a
short training budget, `known_weight` < 1 spends more of the gradient where the model
has to invent healthy tissue. At ``known_weight == 1`` this is mediffusion's loss, to
floating-point precision (tests/test_train.py checks it).

Only the configuration `ichinpaint.model` builds is covered (MSE loss, any mean type
mediffusion knows, learned or fixed variance); the variational term, which only trains
the variance, stays a whole-image mean as in mediffusion.
"""

from __future__ import annotations

import torch
from mediffusion.diffusion.base import LossType, ModelMeanType, ModelVarType

from ichinpaint.model import conditioning_channel


def denoising_loss(
    diffusion,
    model,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    concat: torch.Tensor,
    known_weight: float = 1.0,
) -> torch.Tensor:
    """Per-image loss ``[B]``; pixels outside the inpainting mask weigh `known_weight`.

    The inpainting mask is the conditioning channel ``inpaint_mask`` (`ichinpaint.model`).
    The weighted error is divided by the summed weights, so the loss keeps its scale.
    """
    if not 0.0 <= known_weight <= 1.0:
        raise ValueError(f"known_weight must be in [0, 1], got {known_weight}")
    kwargs = {"concat": concat, "cls": None}
    if known_weight == 1.0:
        terms = diffusion.training_losses(
            model=model, x_start=x_start, t=t, noise=noise, model_kwargs=kwargs
        )
        return terms["loss"]
    if diffusion.loss_type not in (LossType.MSE, LossType.RESCALED_MSE):
        raise ValueError(f"known_weight < 1 needs an MSE loss, got {diffusion.loss_type}")
    x_t = diffusion.q_sample(x_start, t, noise=noise).to(dtype=x_start.dtype)
    output = model(x_t, diffusion._scale_timesteps(t), **kwargs)
    vb = torch.zeros(x_start.shape[0], device=x_start.device, dtype=x_start.dtype)
    if diffusion.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
        output, variance = torch.split(output, x_start.shape[1], dim=1)
        frozen = torch.cat([output.detach(), variance], dim=1)
        vb = diffusion._vb_terms_bpd(
            model=lambda *args, r=frozen: r,
            x_start=x_start,
            x_t=x_t,
            t=t,
            clip_denoised=False,
        )["output"]
        if diffusion.loss_type == LossType.RESCALED_MSE:
            vb = vb * diffusion.num_timesteps / 1000.0
    target = {
        ModelMeanType.START_X: lambda: x_start,
        ModelMeanType.EPSILON: lambda: noise,
        ModelMeanType.VELOCITY: lambda: diffusion._get_v_target(x_start=x_start, noise=noise, t=t),
        ModelMeanType.PREVIOUS_X: lambda: diffusion.q_posterior_mean_variance(
            x_start=x_start, x_t=x_t, t=t
        )[0],
    }[diffusion.model_mean_type]()
    p2 = diffusion._extract_into_tensor(
        1 / (diffusion.p2_k + diffusion.snr) ** diffusion.p2_gamma, t, target.shape
    )
    hidden = conditioning_channel(concat, "inpaint_mask").to(target.dtype)
    weight = known_weight + (1.0 - known_weight) * hidden.expand_as(target)
    dims = list(range(1, target.ndim))
    squared = p2 * (target - output) ** 2
    mse = (weight * squared).sum(dim=dims) / weight.sum(dim=dims).clamp_min(1e-8)
    return mse + vb
