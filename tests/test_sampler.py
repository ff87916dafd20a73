"""The inpainting sampler against known answers: mediffusion's own DDIM, identity, counts."""

import pytest
import torch
from mediffusion.diffusion.solvers import DDIMSolver
from model_fixtures import tiny_inpainter

from ichinpaint import model
from ichinpaint.detection.sampler import (
    InpaintSampler,
    UNetRunner,
    count_denoising_steps,
    ddim_timesteps,
    repaint_schedule,
)
from ichinpaint.detection.strategies import OneStep, Partial, Repaint, make_strategy

IMG = 16


@pytest.fixture(scope="module")
def module():
    return tiny_inpainter(IMG)[0]


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    original = torch.rand(3, 1, IMG, IMG, generator=gen) * 2 - 1
    mask = torch.zeros(3, 1, IMG, IMG)
    mask[:, :, 4:10, 5:11] = 1
    brain = torch.ones_like(original)
    above = torch.rand(3, 1, IMG, IMG, generator=gen) * 2 - 1
    concat = model.make_conditioning(original, brain, above, original, mask)
    return original, concat, mask


def test_matches_mediffusion_ddim_inpainting_without_resampling(module, batch):
    original, concat, mask = batch
    with torch.inference_mode():
        # mediffusion draws x_T and each step's re-noising of the known region from the
        # global RNG (its `generator` only feeds eta noise, unused at eta=0); ours draws
        # the same sequence from a generator with the same seed.
        torch.manual_seed(123)
        x_T = torch.randn(original.shape)
        solver = DDIMSolver(module.diffusion, num_steps=5, eta=0.0)
        expected = solver.sample(
            module.model,
            x_T,
            cond_scale=0,
            model_kwargs={"concat": concat},
            generator=torch.Generator().manual_seed(7),
            mask=mask,
            original_image=original,
        )
        sampler = InpaintSampler(module.diffusion, UNetRunner(module, channels_last=False), 5)
        ours = sampler.inpaint(original, concat, mask, generator=torch.Generator().manual_seed(123))
    assert torch.allclose(ours, expected, atol=1e-5)
    # the comparison has teeth: a different noise draw gives a different answer
    with torch.inference_mode():
        other = sampler.inpaint(original, concat, mask, generator=torch.Generator().manual_seed(5))
    assert (other - expected).abs().max() > 1e-2


@pytest.mark.parametrize(
    "strategy",
    [
        Repaint(ddim_steps=10, jump_length=2, jump_n_sample=2),
        Partial(ddim_steps=10, start_fraction=0.3),
        OneStep(noise_levels=(0.3, 0.6)),
    ],
)
def test_all_known_mask_returns_the_original(module, batch, strategy):
    original, concat, _ = batch
    nothing_hidden = torch.zeros_like(original)
    sampler = strategy.sampler(module.diffusion, UNetRunner(module))
    with torch.inference_mode():
        out = strategy.inpaint(sampler, original, concat, nothing_hidden)
    assert torch.equal(out, original)


def test_repaint_schedule_by_hand():
    # 4 states (3..0), one extra sample of the jump landing on 0, jumps of 2 steps
    assert repaint_schedule(3, jump_length=2, jump_n_sample=2) == [3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert count_denoising_steps(repaint_schedule(3, 2, 2)) == 6
    assert repaint_schedule(4) == [4, 3, 2, 1, 0, -1]
    with pytest.raises(ValueError):
        repaint_schedule(3, jump_length=0)


def test_ddim_timesteps_follow_mediffusion_striding():
    assert ddim_timesteps(1000, 10) == list(range(0, 1000, 100))
    assert ddim_timesteps(1000, 50)[-1] == 980
    with pytest.raises(ValueError, match="stride"):
        ddim_timesteps(1000, 999)


@pytest.mark.parametrize(
    "strategy,per_image",
    [
        (Repaint(ddim_steps=10), 10),
        (Repaint(ddim_steps=10, jump_length=3, jump_n_sample=2), 19),
        (Partial(ddim_steps=10, start_fraction=0.5), 6),  # t = 500 .. 0
        (OneStep(noise_levels=(0.2, 0.4, 0.6)), 3),
    ],
)
def test_counted_forwards_equal_the_analytical_count(module, batch, strategy, per_image):
    original, concat, mask = batch
    runner = UNetRunner(module)
    sampler = strategy.sampler(module.diffusion, runner)
    assert strategy.forwards_per_image(sampler) == per_image
    with torch.inference_mode():
        strategy.inpaint(sampler, original, concat, mask, torch.Generator().manual_seed(0))
    assert runner.forwards == per_image * original.shape[0]
    calls_per_image = per_image  # one batched call per step / level
    assert runner.calls == calls_per_image


def test_strategies_switch(module, batch):
    original, concat, mask = batch
    outputs = {}
    for strategy in (
        Repaint(ddim_steps=10),
        Partial(ddim_steps=10, start_fraction=0.3),
        OneStep(noise_levels=(0.5,)),
    ):
        sampler = strategy.sampler(module.diffusion, UNetRunner(module))
        with torch.inference_mode():
            outputs[strategy.name] = strategy.inpaint(
                sampler, original, concat, mask, torch.Generator().manual_seed(0)
            )
    hidden = mask.bool()
    for a, b in (("repaint", "partial"), ("repaint", "onestep"), ("partial", "onestep")):
        assert (outputs[a] - outputs[b]).abs()[hidden].max() > 1e-3, (a, b)
        # known pixels are the original in every strategy
        assert torch.equal(outputs[a][~hidden], original[~hidden])


def test_partial_start_index_and_bad_values(module):
    sampler = InpaintSampler(module.diffusion, UNetRunner(module), 10)
    assert sampler.start_index(0.5) == 5
    assert sampler.start_index(1.0) == 9
    assert sampler.start_index(0.01) == 0
    with pytest.raises(ValueError):
        sampler.start_index(0.0)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("anoddpm")


def test_the_detector_draws_the_noise_its_model_was_trained_with(module, batch):
    """The spec's noise_cell reaches the sampler; onestep's noisy input is then coarse."""
    from ichinpaint.detection.series import Detector
    from ichinpaint.detection.settings import DetectSettings

    module.inpainter_spec = model.InpainterSpec(
        img_size=IMG, model_channels=32, channel_mult=(1, 2), attention_resolutions=(),
        noise_cell=8,
    )  # fmt: skip
    try:
        detector = Detector.build(DetectSettings(device="cpu"), module)
    finally:
        del module.inpainter_spec
    assert detector.sampler.noise_cell == 8
    original = torch.zeros(2000, 1, IMG, IMG)
    noisy = detector.sampler.q_sample(original, 500, torch.Generator().manual_seed(0))[:, 0]
    near = torch.corrcoef(torch.stack([noisy[:, 6, 6], noisy[:, 6, 7]]))[0, 1]
    assert near > 0.8  # white noise would give ~0
