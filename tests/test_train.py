"""The train stage: masks, augmentation, samples, one step, resume, artefacts, metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_fixtures import write_png_set

from ichinpaint import grid, model
from ichinpaint.training import augment, callbacks, dataset, loop, masks
from ichinpaint.training.loss import denoising_loss
from ichinpaint.training.module import InpaintingModule

REPO = Path(__file__).resolve().parents[1]
IMG = 16
SIZES_256 = (32, 64)  # -> 2 and 4 px at 16 px


@pytest.fixture
def png_set(tmp_path: Path) -> Path:
    return write_png_set(tmp_path, img_size=IMG)


def tiny_config(**overrides) -> loop.TrainConfig:
    values = dict(
        img_size=IMG,
        total_image_seen=20,
        batch_size=4,
        model_channels=32,
        channel_mult=(1, 2),
        attention_resolutions=(),
        sizes=SIZES_256,
        val_every=10_000,
        val_images=4,
        checkpoint_every=8,
        lr=1e-3,
        transforms=str(REPO / "transforms/train.json"),
    )
    values.update(overrides)
    return loop.TrainConfig(**values)


def tiny_paths(root: Path, manifest: Path) -> loop.TrainPaths:
    return loop.TrainPaths(
        slices=manifest,
        out=root / "models/inpainter.ckpt",
        state_dir=root / "models/train_state",
        live_dir=root / "dvclive/train",
        metrics=root / "metrics/train.json",
        root=root,
    )


# -- masks -----------------------------------------------------------------------------
def test_grid_masks_are_detection_passes_that_touch_the_brain():
    brain = np.zeros((IMG, IMG), np.float32)
    brain[4:12, 5:11] = 1
    sizes = model.scaled_sizes(SIZES_256, IMG)
    patterns = {
        p: grid.pass_mask(IMG, p).astype(np.float32) for p in grid.all_passes(sizes, offsets=True)
    }
    rng = np.random.default_rng(0)
    for _ in range(30):
        mask = masks.training_mask(brain, sizes, grid_fraction=1.0, rng=rng)
        assert mask.shape == (IMG, IMG)
        matches = [p for p, m in patterns.items() if np.array_equal(m, mask)]
        assert matches, "grid mask is not one of the detection passes"
        assert (mask * brain).sum() > 0


def test_random_masks_are_squares_of_the_sizes_inside_image_and_on_brain():
    brain = np.zeros((IMG, IMG), np.float32)
    brain[0:3, 13:16] = 1  # brain in a corner: squares must be pushed inside the image
    sizes = model.scaled_sizes(SIZES_256, IMG)
    rng = np.random.default_rng(1)
    for _ in range(30):
        mask = masks.random_squares_mask(brain, sizes, rng, max_squares=1)
        rows, cols = np.nonzero(mask)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert height == width and height in sizes
        assert mask.sum() == height * width  # one full square, within the image
        assert (mask * brain).sum() > 0


def test_training_mask_mix_follows_grid_fraction():
    brain = np.ones((IMG, IMG), np.float32)
    sizes = model.scaled_sizes(SIZES_256, IMG)
    rng = np.random.default_rng(2)
    # A grid pass hides many squares; 1..3 random squares of <= 4 px hide at most 48 px.
    big = [masks.training_mask(brain, sizes, 0.0, rng).sum() > 48 for _ in range(20)]
    assert not any(big)
    with pytest.raises(ValueError, match="sizes"):
        masks.training_mask(brain, [], 0.5, rng)


# -- augmentation ------------------------------------------------------------------------
def centroid(a: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(a > 127)
    return np.array([rows.mean(), cols.mean()])


def test_augmentation_moves_image_neighbours_and_mask_together():
    transforms = augment.load_transforms(REPO / "transforms/train.json")
    size = 48
    marker = np.zeros((size, size), np.uint8)
    marker[8:13, 30:35] = 255  # off-centre, so flips and rotations move it
    moved = 0
    for seed in range(12):
        image, above, below, mask = augment.augment_slice(
            transforms, marker, marker.copy(), marker.copy(), marker.copy(), seed
        )
        c = centroid(image)
        assert np.allclose(centroid(above), c) and np.allclose(centroid(below), c)
        assert np.abs(centroid(mask) - c).max() < 1.0
        assert set(np.unique(mask)) <= {0, 255}  # nearest for the mask
        moved += not np.allclose(c, centroid(marker))
    assert moved >= 6


def test_committed_transforms_are_what_the_code_writes(tmp_path):
    written = augment.write_transforms(tmp_path / "train.json")
    assert json.loads(written.read_text()) == json.loads(
        (REPO / "transforms/train.json").read_text()
    )
    with pytest.raises(FileNotFoundError, match="nope.json"):
        augment.load_transforms(tmp_path / "nope.json")


# -- samples -----------------------------------------------------------------------------
def test_sample_follows_the_model_contract(png_set):
    rows = dataset.read_split(png_set, "train")
    assert len(rows) == 6  # 2 series x 4 slices, minus the use == False one each
    ds = dataset.InpaintingDataset(
        rows,
        png_set.parents[2],
        IMG,
        model.scaled_sizes(SIZES_256, IMG),
        0.5,
        transforms=augment.load_transforms(REPO / "transforms/train.json"),
    )
    sample = ds[0]
    assert sample["img"].shape == (1, IMG, IMG)
    assert sample["concat"].shape == (len(model.CONDITIONING), IMG, IMG)
    assert sample["img"].min() >= -1 and sample["img"].max() <= 1
    brain = sample["concat"][model.CONDITIONING.index("brain_mask")]
    hidden = sample["concat"][model.CONDITIONING.index("inpaint_mask")]
    known = sample["concat"][model.CONDITIONING.index("known_image")]
    assert set(brain.unique().tolist()) <= {0.0, 1.0} and set(hidden.unique().tolist()) == {
        0.0,
        1.0,
    }
    assert torch.all(known[hidden == 1] == model.BLANK_VALUE)
    assert torch.equal(known[hidden == 0], sample["img"][0][hidden == 0])


def test_unaugmented_sample_reads_png_values(png_set):
    from PIL import Image

    rows = dataset.read_split(png_set, "val")
    ds = dataset.InpaintingDataset(rows, png_set.parents[2], IMG, [2], 0.0, fixed_seed=3)
    png = np.asarray(Image.open(png_set.parents[2] / rows.loc[0, "image_path"]))
    assert torch.allclose(ds[0]["img"][0], torch.from_numpy(png / 127.5 - 1).float())
    assert torch.equal(ds[0]["concat"], ds[0]["concat"])  # fixed seed: same mask each time


def test_bad_inputs_are_refused_by_name(png_set):
    import pandas as pd

    frame = pd.read_csv(png_set)
    frame.loc[frame["split"] == "train", "any"] = 1
    sick = png_set.with_name("sick.csv")
    frame.to_csv(sick, index=False)
    with pytest.raises(ValueError, match="sick.csv.*hemorrhage"):
        dataset.read_split(sick, "train")
    rows = dataset.read_split(png_set, "train")
    (png_set.parents[2] / rows.loc[0, "above_path"]).unlink()
    ds = dataset.InpaintingDataset(rows, png_set.parents[2], IMG, [2], 0.5)
    with pytest.raises(FileNotFoundError, match=rows.loc[0, "above_path"]):
        ds[0]
    with pytest.raises(ValueError, match="shape"):
        dataset.InpaintingDataset(rows, png_set.parents[2], 32, [2], 0.5)[len(rows) - 1]


# -- one step ----------------------------------------------------------------------------
def test_one_training_step_gives_a_finite_loss_and_gradients(png_set):
    cfg = tiny_config()
    train_ds, _ = loop.build_datasets(cfg, tiny_paths(png_set.parents[2], png_set))
    module = model.build_module(
        cfg.spec(), module_class=InpaintingModule, max_steps=1, channels_last=True, batch_size=4
    )
    batch = next(iter(torch.utils.data.DataLoader(train_ds, batch_size=4)))
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _loss_inputs(png_set, seed=0):
    cfg = tiny_config()
    train_ds, _ = loop.build_datasets(cfg, tiny_paths(png_set.parents[2], png_set))
    torch.manual_seed(seed)
    module = model.build_module(
        cfg.spec(), module_class=InpaintingModule, max_steps=1, batch_size=4
    )
    batch = next(iter(torch.utils.data.DataLoader(train_ds, batch_size=4)))
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, module.diffusion.num_timesteps, (4,), generator=gen)
    noise = torch.randn(batch["img"].shape, generator=gen)
    return module, batch, t, noise


def test_known_weight_one_is_mediffusions_loss(png_set):
    module, batch, t, noise = _loss_inputs(png_set)
    theirs = module.diffusion.training_losses(
        model=module.model,
        x_start=batch["img"],
        t=t,
        noise=noise,
        model_kwargs={"concat": batch["concat"], "cls": None},
    )
    assert batch["concat"][:, -1].sum() > 0  # there is a hidden region to weigh
    for known_weight in (1.0, 1.0 - 1e-12):  # the shortcut and the weighted path
        ours = denoising_loss(
            module.diffusion, module.model, batch["img"], t, noise, batch["concat"], known_weight
        )
        torch.testing.assert_close(ours, theirs["loss"], rtol=1e-5, atol=1e-6)


def test_known_weight_zero_ignores_the_visible_pixels(png_set):
    module, batch, t, noise = _loss_inputs(png_set)
    concat = batch["concat"]
    visible = (concat[:, -1:] == 0).float()

    def wrong_where_visible(x, ts, **kwargs):  # the mean prediction off by 5 outside the mask
        out = module.model(x, ts, **kwargs)
        return torch.cat([out[:, :1] + 5.0 * visible, out[:, 1:]], dim=1)

    args = (batch["img"], t, noise, concat)
    base = denoising_loss(module.diffusion, module.model, *args, 0.0)
    torch.testing.assert_close(
        denoising_loss(module.diffusion, wrong_where_visible, *args, 0.0), base
    )
    half = denoising_loss(module.diffusion, wrong_where_visible, *args, 0.5)
    assert (half > base + 1).all()  # at 0.5 the visible error counts
    with pytest.raises(ValueError, match="known_weight"):
        denoising_loss(module.diffusion, module.model, *args, 1.5)


def test_lr_schedule_warms_up_then_decays():
    module = model.build_module(
        tiny_config().spec(), module_class=InpaintingModule, max_steps=100, batch_size=4
    )
    factors = [module.lr_factor(s) for s in range(100)]
    assert factors[0] < factors[4] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(module.min_lr_fraction, abs=0.01)


def test_ema_averages_from_the_first_steps_and_tracks_one_update_per_step():
    import types

    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))

    tiny = Tiny()
    ema = callbacks.WarmupEMA(decay=0.999, ema_device="cpu")
    ema.ema_state_dict = {"w": torch.zeros(3)}
    trainer = types.SimpleNamespace(global_step=1)
    with torch.no_grad():
        tiny.w.fill_(1.0)
    ema.on_train_batch_end(trainer, tiny, None, None, 0)
    assert torch.allclose(ema.ema_state_dict["w"], torch.full((3,), 0.9))  # decay 1/10 at n=0
    ema.on_train_batch_end(trainer, tiny, None, None, 1)  # same global step: no update
    assert ema.updates == 1
    for step in range(2, 200):
        trainer.global_step = step
        ema.on_train_batch_end(trainer, tiny, None, None, step)
    assert ema.updates == 199 and ema.current_decay() == pytest.approx(200 / 209)  # warming up
    assert torch.allclose(ema.ema_state_dict["w"], torch.ones(3), atol=1e-6)


# -- resume state --------------------------------------------------------------------------
def test_resume_state_of_another_configuration_is_discarded(tmp_path):
    state = tmp_path / "state"
    assert loop.resume_checkpoint(state, "aaa") is None
    (state / "last.ckpt").write_bytes(b"x")
    assert loop.resume_checkpoint(state, "aaa") == state / "last.ckpt"
    assert loop.resume_checkpoint(state, "bbb") is None
    assert not (state / "last.ckpt").exists()
    (state / "last.ckpt").write_bytes(b"x")
    loop.mark_finished(state, "bbb")  # a finished run is never resumed
    assert loop.resume_checkpoint(state, "bbb") is None
    assert not (state / "last.ckpt").exists()
    assert tiny_config().fingerprint() == tiny_config(num_workers=2).fingerprint()
    assert tiny_config().fingerprint() != tiny_config(lr=1e-4).fingerprint()


def test_killed_run_resumes_to_the_same_images_seen_and_exports_safe_weights(png_set):
    root = png_set.parents[2]
    cfg = tiny_config(total_image_seen=20, checkpoint_every=8)  # 5 steps, checkpoint every 2
    paths = tiny_paths(root, png_set)
    with pytest.raises(callbacks.TrainingInterrupted):
        loop.train(cfg, paths, hard_stop_steps=3)
    state = torch.load(paths.state_dir / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2  # the step-3 checkpoint never happened
    assert not paths.out.exists() and not paths.metrics.exists()

    metrics = loop.train(cfg, paths)
    assert metrics["resumed_from_step"] == 2
    assert metrics["steps"] == cfg.max_steps == 5
    assert metrics["images_seen"] == 20 and metrics["images_trained_this_run"] == 12
    assert set(loop.METRIC_KEYS) <= set(json.loads(paths.metrics.read_text()))
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["val_loss"])

    # The exported model is the EMA of the final state and loads with weights_only=True.
    final = torch.load(paths.state_dir / "last.ckpt", weights_only=False)
    assert final["global_step"] == 5
    assert json.loads((paths.state_dir / "fingerprint.json").read_text())["finished"]
    loaded, spec = model.load_inpainter(paths.out)
    assert spec == cfg.spec()
    reference = model.build_module(spec).eval()
    reference.load_state_dict(final["ema_state_dict"])
    x, c, t = torch.randn(2, 1, IMG, IMG), torch.randn(2, 5, IMG, IMG), torch.tensor([5, 700])
    with torch.inference_mode():
        assert torch.equal(
            model.unet_forward(loaded, x, t, c), model.unet_forward(reference, x, t, c)
        )

    # DVCLive: loss curves for `dvc plots`, params, validation inpaintings.
    live = paths.live_dir
    assert (live / "plots/metrics/train/step/loss.tsv").is_file() or any(live.rglob("*loss*.tsv"))
    assert (live / "plots/metrics/val/loss.tsv").is_file()
    assert list((live / "plots/images/inpaintings").glob("*.png"))
    assert yaml.safe_load((live / "params.yaml").read_text())["batch_size"] == 4


def test_training_without_dvclive_writes_the_model_and_a_csv_log(png_set):
    """`--live_dir ''`: a bare GPU node with no DVC runs training alone."""
    root = png_set.parents[2]
    paths = dataclasses.replace(tiny_paths(root, png_set), live_dir=None)
    metrics = loop.train(tiny_config(total_image_seen=8), paths)
    assert metrics["images_seen"] == 8 and paths.out.is_file()
    assert not (root / "dvclive").exists()
    logged = list((paths.state_dir / "log").rglob("metrics.csv"))
    assert logged and "loss" in logged[0].read_text()
    hparams = list((paths.state_dir / "log").rglob("hparams.yaml"))
    assert hparams and "batch_size" in hparams[0].read_text()


# -- stage -------------------------------------------------------------------------------


# -- exact resume ------------------------------------------------------------------------
def live_files(live: Path) -> dict[str, bytes]:
    return {p.relative_to(live).as_posix(): p.read_bytes() for p in live.rglob("*") if p.is_file()}


@pytest.mark.parametrize("accumulate", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_run_killed_twice_resumes_to_the_same_model_and_history(tmp_path, accumulate):
    """Weights and every DVCLive file equal an uninterrupted run's (issue 15, finding 6)."""
    cfg = tiny_config(
        total_image_seen=24 * accumulate,  # 6 optimiser steps
        accumulate_grad_batches=accumulate,
        checkpoint_every=8 * accumulate,  # every 2 steps
        val_every=8 * accumulate,  # validate every 2 steps
    )
    runs = {}
    for name, kills in (("straight", []), ("killed", [3, 5])):
        root = tmp_path / name
        paths = tiny_paths(root, write_png_set(root, img_size=IMG))
        for step in kills:
            with pytest.raises(callbacks.TrainingInterrupted):
                loop.train(cfg, paths, hard_stop_steps=step)
        runs[name] = (loop.train(cfg, paths), paths)
    (straight, a), (killed, b) = runs["straight"], runs["killed"]
    assert killed["resumed_from_step"] == 4 and straight["steps"] == killed["steps"] == 6
    wa, wb = torch.load(a.out, weights_only=True), torch.load(b.out, weights_only=True)
    wa, wb = wa.get("state_dict", wa), wb.get("state_dict", wb)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    history_a, history_b = live_files(a.live_dir), live_files(b.live_dir)
    assert history_a.keys() == history_b.keys()
    for name in history_a:
        assert history_a[name] == history_b[name], name
    rows = history_a["plots/metrics/val/loss.tsv"].decode().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == [2, 4, 6]  # at their optimiser steps


def test_resume_state_loads_without_unpickling_code(png_set, tmp_path):
    """last.ckpt is plain tensors and containers; a crafted pickle is refused, not run."""
    root = png_set.parents[2]
    cfg = tiny_config(total_image_seen=8, checkpoint_every=4)
    paths = tiny_paths(root, png_set)
    loop.train(cfg, paths)
    state = torch.load(paths.state_dir / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2 and "optimizer_states" in state

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    crafted = tmp_path / "last.ckpt"
    torch.save({"global_step": 1, "x": Payload()}, crafted)
    with pytest.raises(ValueError, match="not a safe resume checkpoint"):
        callbacks.load_state(crafted)
    assert not (tmp_path / "pwned").exists()
