"""One training run, end to end: data, model, Lightning trainer, resume, artefacts.

The run is defined by a :class:`TrainConfig` (the ``train`` params) and a
:class:`TrainPaths` (where things are read and written). It always trains to the same
number of optimiser steps, ``ceil(total_image_seen / (batch_size * accumulate *
devices * nodes))``; a killed run restarts from ``<state_dir>/last.ckpt`` and reaches
that same count, with the same weights and the same DVCLive history as an uninterrupted
run (every random draw depends on the seed and the sample's position, see
`ichinpaint.training.dataset.TrainingStream`; the history is cut back to the
checkpoint's snapshot). The state loads with ``weights_only=True``. The resume state is used only when it was written by the same
configuration and data (a fingerprint in ``<state_dir>/fingerprint.json``) and did not
finish; otherwise it is discarded and the run starts over, so a changed param never
continues an unrelated run and a rerun never just re-exports an old model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from ichinpaint import params
from ichinpaint.io import read_json, write_json
from ichinpaint.model import (
    NEIGHBOURS,
    InpainterSpec,
    build_module,
    save_inpainter,
    scaled_sizes,
)
from ichinpaint.training.augment import load_transforms
from ichinpaint.training.callbacks import (
    LIVE_ROWS_KEY,
    HardStop,
    PeriodicCheckpoint,
    PeriodicValidation,
    SafeCheckpointIO,
    WarmupEMA,
    load_state,
    restore_live_history,
)
from ichinpaint.training.dataset import InpaintingDataset, read_split
from ichinpaint.training.module import InpaintingModule

# Params that change how the run is executed or observed, not what it learns (the
# augmentation file's bytes, not its path, are part of the fingerprint).
NOT_IN_FINGERPRINT = (
    "num_workers",
    "compile",
    "val_every",
    "val_images",
    "checkpoint_every",
    "transforms",
)
METRIC_KEYS = (
    "train_loss",
    "val_loss",
    "images_seen",
    "steps",
    "images_trained_this_run",
    "resumed_from_step",
    "wall_time_s",
    "images_per_s",
    "parameters",
    "device",
)


@dataclasses.dataclass
class TrainConfig:
    """The ``train`` params (``ichinpaint train --help`` prints each one)."""

    transforms: str = params.setting(
        "transforms/train.json", "albumentations pipeline (A.save JSON)"
    )
    img_size: int = params.setting(
        64, "square image size; must match the png stage", rule=params.at_least(8)
    )
    total_image_seen: int = params.setting(
        2400, "training length in images", rule=params.at_least(1)
    )
    batch_size: int = params.setting(
        16, "images per device per micro-batch", rule=params.at_least(1)
    )
    accumulate_grad_batches: int = params.setting(
        1, "micro-batches per step", rule=params.at_least(1)
    )
    num_devices: int = params.setting(1, "devices per node (DDP when > 1)", rule=params.at_least(1))
    num_nodes: int = params.setting(
        1, "nodes (DDP, launched by torchrun/SLURM)", rule=params.at_least(1)
    )
    precision: str = params.setting(
        "32",
        'Lightning precision: "32" on CPU, "bf16-mixed" on GPU',
        rule=params.one_of(("32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64")),
    )
    lr: float = params.setting(
        2e-3, "peak AdamW learning rate (warm-up, then cosine)", rule=params.greater_than(0)
    )
    ema_decay: float = params.setting(
        0.995, "EMA decay ceiling (warmed up from 0.1)", rule=params.between(0, 1, high_open=True)
    )
    model_channels: int = params.setting(
        32,
        "UNet base channels (multiple of 32)",
        rule=params.multiple_of(32, 32),  # GroupNorm32
    )
    channel_mult: tuple[int, ...] = params.setting(
        (1, 2, 2), "per-level channel multipliers", rule=params.at_least(1)
    )
    attention_resolutions: tuple[int, ...] = params.setting(
        (8,),
        "downsampling factors with self-attention",
        rule=params.maybe_empty(params.at_least(1)),
    )
    num_res_blocks: int = params.setting(1, "residual blocks per level", rule=params.at_least(1))
    sizes: tuple[int, ...] = params.setting(
        (8, 16, 32, 64), "square sizes at 256 px (scaled to img_size)", rule=params.at_least(1)
    )
    grid_fraction: float = params.setting(
        0.5, "share of masks that are a detection-grid pass", rule=params.between(0, 1)
    )
    neighbours: str = params.setting(
        "keep",
        "how the slices above and below are shown: keep (whole), hide (blanked under the "
        "inpainting mask, so a bleed spanning slices cannot leak), none; written into the "
        "model spec, detection follows it",
        choices=NEIGHBOURS,
    )
    noise_cell: int = params.setting(
        1,
        "diffusion noise: 1 = white (per pixel, mediffusion's); k > 1 = coarse, drawn on "
        "k-pixel cells at img_size and interpolated, so a model learns to remove blob-sized "
        "changes (Kascenas, AnoDDPM); written into the model spec, detection follows it",
        rule=params.at_least(1),
    )
    known_weight: float = params.setting(
        1.0,
        "weight of the visible pixels in the denoising loss, against 1 for the hidden squares "
        "(1 = mediffusion's whole-image loss; lower spends short trainings on re-painting)",
        rule=params.between(0, 1),
    )
    val_every: int = params.setting(
        800, "validate every this many training images", rule=params.at_least(1)
    )
    val_images: int = params.setting(
        32, "validation slices used (spread over the split)", rule=params.at_least(1)
    )
    checkpoint_every: int = params.setting(
        400, "resume checkpoint every this many images", rule=params.at_least(1)
    )
    seed: int = params.setting(0, "random seed", rule=params.SEED)
    num_workers: int = params.setting(
        0, "dataloader worker processes (0 = in process)", rule=params.at_least(0)
    )
    channels_last: bool = params.setting(
        True, "channels-last memory format (faster convolutions on CPU and GPU)"
    )
    compile: bool = params.setting(False, "torch.compile the UNet")

    def spec(self) -> InpainterSpec:
        return InpainterSpec(
            img_size=self.img_size,
            model_channels=self.model_channels,
            channel_mult=tuple(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=tuple(self.attention_resolutions),
            lr=self.lr,
            neighbours=self.neighbours,
            noise_cell=self.noise_cell,
        )

    @property
    def world_size(self) -> int:
        return self.num_devices * self.num_nodes

    @property
    def images_per_step(self) -> int:
        return self.batch_size * self.accumulate_grad_batches * self.world_size

    @property
    def max_steps(self) -> int:
        return max(1, math.ceil(self.total_image_seen / self.images_per_step))

    def steps_for(self, images: int) -> int:
        return max(1, round(images / self.images_per_step))

    def fingerprint(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IN_FINGERPRINT}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()[
            :16
        ]


@dataclasses.dataclass
class TrainPaths:
    """Inputs and outputs of a run; manifest paths are relative to `root`."""

    slices: Path
    out: Path  # the EMA weights (models/inpainter.ckpt); the spec goes beside it as .json
    state_dir: Path  # resume state (persisted DVC output)
    live_dir: Path | None  # DVCLive directory; None: no DVCLive (a CSV log in state_dir)
    metrics: Path
    root: Path = Path(".")


def logged_params(cfg: TrainConfig) -> dict[str, Any]:
    """The config as DVCLive records it (lists for tuples); the augmentation is a file that
    DVC tracks as a dependency, so its path is left out, as it always was."""
    values = dataclasses.asdict(cfg)
    del values["transforms"]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def run_fingerprint(cfg: TrainConfig, paths: TrainPaths) -> str:
    """Hash of the params that define the run, the manifest and the augmentation file.

    PNG contents are not hashed (too many files on real data); a png-stage rerun
    rewrites the manifest's ``midrange_fraction``/``use`` columns anyway, and a finished
    run is never resumed (see :func:`resume_checkpoint`).
    """
    digest = hashlib.sha256(cfg.fingerprint().encode())
    for path in (paths.slices, cfg.transforms):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def resume_checkpoint(state_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint of an unfinished run of the same fingerprint, or None.

    State from another configuration, or from a run that finished (the stage runs again
    only because something changed that the fingerprint cannot see), is removed.
    """
    ckpt = state_dir / "last.ckpt"
    stamp = state_dir / "fingerprint.json"
    stored = read_json(stamp) if stamp.is_file() else {}
    if state_dir.exists() and (stored.get("fingerprint") != fingerprint or stored.get("finished")):
        if ckpt.exists():
            why = "finished" if stored.get("finished") else "from another configuration"
            print(f"[train] {state_dir}: resume state is {why}; starting over")
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"fingerprint": fingerprint, "finished": False})
    return ckpt if ckpt.is_file() else None


def mark_finished(state_dir: Path, fingerprint: str) -> None:
    write_json(Path(state_dir) / "fingerprint.json", {"fingerprint": fingerprint, "finished": True})


def validation_rows(rows, limit: int):
    """At most `limit` rows spread evenly over the split (all series represented)."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    return rows.iloc[np.linspace(0, len(rows) - 1, limit).round().astype(int)].reset_index(
        drop=True
    )


def build_datasets(
    cfg: TrainConfig, paths: TrainPaths
) -> tuple[InpaintingDataset, InpaintingDataset]:
    sizes = scaled_sizes(cfg.sizes, cfg.img_size)
    train_rows = read_split(paths.slices, "train")
    val_rows = validation_rows(read_split(paths.slices, "val"), cfg.val_images)
    common = dict(
        root=paths.root,
        img_size=cfg.img_size,
        sizes=sizes,
        grid_fraction=cfg.grid_fraction,
        neighbours=cfg.neighbours,
    )
    train_ds = InpaintingDataset(train_rows, transforms=load_transforms(cfg.transforms), **common)
    val_ds = InpaintingDataset(val_rows, transforms=None, fixed_seed=cfg.seed, **common)
    return train_ds, val_ds


def build_logger(paths: TrainPaths, resuming: bool) -> Any:
    """DVCLive in `live_dir`; without one, Lightning's CSV log in the state directory, for
    machines that run training alone (a bare GPU node with no DVC installed)."""
    if paths.live_dir is None:
        return pl.loggers.CSVLogger(str(paths.state_dir), name="log")
    from dvclive.lightning import DVCLiveLogger

    return DVCLiveLogger(
        dir=str(paths.live_dir), resume=resuming, dvcyaml=False, save_dvc_exp=False, report=None
    )


def build_trainer(cfg: TrainConfig, paths: TrainPaths, resuming: bool, hard_stop_steps: int | None):
    logger = build_logger(paths, resuming)
    ema = WarmupEMA(cfg.ema_decay)
    callbacks: list[pl.Callback] = [ema, StopAtMaxSteps(cfg.max_steps)]
    if hard_stop_steps is not None:
        callbacks.append(HardStop(hard_stop_steps))  # before the checkpoint: like a kill
    # The checkpoint before the validation of the same step: its DVCLive snapshot holds
    # the steps before, and a run resumed from it validates that step again.
    callbacks.append(
        PeriodicCheckpoint(paths.state_dir / "last.ckpt", cfg.steps_for(cfg.checkpoint_every))
    )
    callbacks.append(PeriodicValidation(ema, cfg.steps_for(cfg.val_every)))
    trainer = pl.Trainer(
        accelerator="auto",
        devices=cfg.num_devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if cfg.world_size > 1 else "auto",
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=1.0,
        limit_val_batches=0,  # PeriodicValidation validates, keyed to the optimiser step
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, cfg.max_steps // 100)),
        logger=logger,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO(paths.live_dir)],
        use_distributed_sampler=False,  # the module's PositionSampler splits the stream by rank
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(paths.state_dir),
    )
    return trainer, ema, logger


class StopAtMaxSteps(pl.Callback):
    """Ask Lightning to stop at the last step, so that it runs a final validation first."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step >= self.max_steps:
            trainer.should_stop = True


@torch.inference_mode()
def final_val_loss(module: InpaintingModule, weights: dict[str, torch.Tensor]) -> float:
    """Validation loss of `weights` (the EMA) at the fixed validation timesteps and noise."""
    module.load_state_dict(weights)
    module.eval()
    device = next(module.parameters()).device
    losses, counts = [], []
    for i, batch in enumerate(module.val_dataloader()):
        batch = module._prepare({k: v.to(device) for k, v in batch.items()})
        losses.append(float(module.fixed_loss(batch, i)))
        counts.append(batch["img"].shape[0])
    return float(np.average(losses, weights=counts))


def train(
    cfg: TrainConfig, paths: TrainPaths, hard_stop_steps: int | None = None
) -> dict[str, Any]:
    """Train (or resume) to ``cfg.max_steps``; write the EMA model, the metrics; return them.

    `hard_stop_steps` aborts with ``TrainingInterrupted`` after that many steps, without
    a final checkpoint: it stands in for a killed process in tests.
    """
    start = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    train_ds, val_ds = build_datasets(cfg, paths)
    fingerprint = run_fingerprint(cfg, paths)
    resume = resume_checkpoint(Path(paths.state_dir), fingerprint)
    if resume is not None and paths.live_dir is not None:
        snapshot = load_state(resume, map_location="cpu").get(LIVE_ROWS_KEY, {})
        restore_live_history(paths.live_dir, snapshot)
    module = build_module(
        cfg.spec(),
        module_class=InpaintingModule,
        max_steps=cfg.max_steps,
        num_workers=cfg.num_workers,
        channels_last=cfg.channels_last,
        train_ds=train_ds,
        val_ds=val_ds,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        known_weight=cfg.known_weight,
        noise_cell=cfg.noise_cell,
    )
    if cfg.compile:
        module.model.compile()  # in place: state_dict keys stay those of the plain model
    trainer, ema, logger = build_trainer(
        cfg, paths, resuming=resume is not None, hard_stop_steps=hard_stop_steps
    )
    if trainer.is_global_zero:
        if paths.live_dir is not None:  # DVCLive's own call keeps lists (Lightning's strs them)
            logger.experiment.log_params(logged_params(cfg))
        else:
            logger.log_hyperparams(logged_params(cfg))
    fit_start = time.perf_counter()
    trainer.fit(module, ckpt_path=str(resume) if resume else None)
    fit_seconds = time.perf_counter() - fit_start
    if not trainer.is_global_zero:
        return {}
    resumed_from = module.resumed_from_step
    weights = ema.ema_weights()
    spec = cfg.spec()
    save_inpainter(
        paths.out,
        weights,
        spec,
        extra={
            "training": {
                "images_seen": trainer.global_step * cfg.images_per_step,
                "steps": trainer.global_step,
            }
        },
    )
    trained = (trainer.global_step - resumed_from) * cfg.images_per_step
    metrics = {
        "train_loss": float(np.mean(module.recent_train_losses))
        if module.recent_train_losses
        else float("nan"),
        "val_loss": final_val_loss(module, weights),
        "images_seen": trainer.global_step * cfg.images_per_step,
        "steps": trainer.global_step,
        "images_trained_this_run": trained,
        "resumed_from_step": resumed_from,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "images_per_s": round(trained / fit_seconds, 2) if fit_seconds > 0 else 0.0,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "device": trainer.strategy.root_device.type,  # the module is back on the CPU by now
    }
    write_json(paths.metrics, metrics)
    mark_finished(paths.state_dir, fingerprint)
    return metrics
