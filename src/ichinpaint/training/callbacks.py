"""Lightning callbacks and plugins for a resumable, EMA-tracked training run."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from bkh_pytorch_utils import EMA
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from ichinpaint.io import atomic_path


class WarmupEMA(EMA):
    """bkh_pytorch_utils' EMA with a warm-up of the decay and one update per optimiser step.

    With a few hundred steps a fixed decay of 0.999 would leave the average mostly at
    the random initialisation; ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates
    averages over the whole run early on and over ~1/(1-decay) steps later.
    The EMA state (and the update count) is saved in the Lightning checkpoint, so a
    resumed run continues the same average.
    """

    def __init__(self, decay: float, ema_device: str | torch.device | None = None) -> None:
        # bkh's EMA defaults to "cuda:0"; None here means "wherever the model is".
        super().__init__(
            decay=decay, ema_interval_steps=1, ema_device=ema_device, use_ema_for_validation=True
        )
        self._device_from_model = ema_device is None
        self.updates = 0
        self._last_global_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_global_step = trainer.global_step  # update after the *next* optimiser step
        if self._device_from_model:
            self.ema_device = str(pl_module.device)
        if self._ema_state_dict_ready:  # restored from a checkpoint: bring it to our device
            self.ema_state_dict = {k: v.to(self.ema_device) for k, v in self.ema_state_dict.items()}
        super().on_train_start(trainer, pl_module)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # Only after a real optimiser step (not each accumulated micro-batch), rank 0 only.
        if trainer.global_step == self._last_global_step or pl_module.global_rank != 0:
            return
        self._last_global_step = trainer.global_step
        weight = 1.0 - self.current_decay()
        for key, value in pl_module.state_dict().items():
            ema_value = self.ema_state_dict[key]
            if ema_value.is_floating_point():
                ema_value.lerp_(value.detach().to(ema_value.device, ema_value.dtype), weight)
            else:
                ema_value.copy_(value)
        self.updates += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        checkpoint["ema_updates"] = self.updates

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self.updates = int(checkpoint.get("ema_updates", 0))

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights, as plain tensors on the CPU."""
        return {k: v.detach().cpu().clone() for k, v in self.ema_state_dict.items()}


LIVE_ROWS_KEY = "dvclive_files"


def plain(value: Any, where: str = "checkpoint") -> Any:
    """`value` made of dicts, lists, strings, numbers, None and tensors only.

    Such a checkpoint loads with ``torch.load(weights_only=True)``, which runs no
    pickled code. Dict subclasses (Lightning's AttributeDict, OmegaConf containers) become
    plain dicts, tuples lists, numpy values tensors or numbers; anything else is refused
    rather than pickled.
    """
    if isinstance(value, torch.Tensor | str | bool | int | float | type(None)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if OmegaConf.is_config(value):
        return plain(OmegaConf.to_container(value, resolve=True), where)
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str | int)]
        if bad:  # optimizer states are keyed by int: keys keep their type
            raise TypeError(f"{where}: key {bad[0]!r} cannot be stored in a safe checkpoint")
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a safe checkpoint")


def live_snapshot(live_dir: str | os.PathLike) -> dict[str, int]:
    """The DVCLive files of a run as they stand: relative path -> rows (.tsv) or -1 (others)."""
    live_dir = Path(live_dir)
    files = {}
    for path in sorted((live_dir / "plots").rglob("*")) if live_dir.is_dir() else []:
        if path.is_file():
            rel = path.relative_to(live_dir).as_posix()
            if path.suffix == ".tsv":
                with open(path, "rb") as fh:
                    files[rel] = sum(1 for _ in fh)
            else:
                files[rel] = -1
    return files


def restore_live_history(live_dir: str | os.PathLike, snapshot: dict[str, int]) -> None:
    """Put DVCLive's history back to a checkpoint's snapshot: rows and files logged after it go.

    A killed run has logged steps beyond its last checkpoint; the resumed run logs them
    again, so without this they would appear twice (or the history would have gaps).
    """
    live_dir = Path(live_dir)
    for rel, rows in live_snapshot(live_dir).items():
        path = live_dir / rel
        keep = snapshot.get(rel)
        if keep is None:
            path.unlink()
        elif keep >= 0 and rows > keep:
            with open(path, "rb") as fh:
                lines = fh.readlines()[:keep]
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"".join(lines))


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's resume state, stored so that loading it cannot run code.

    The checkpoint is reduced to plain containers and tensors (`plain`), written
    atomically with a snapshot of the DVCLive history at that step, and read back with
    ``torch.load(weights_only=True)``: ``models/train_state/last.ckpt`` travels with
    ``dvc push``/``dvc pull``, and a crafted file must not run anything on ``dvc repro``.
    """

    def __init__(self, live_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.live_dir = live_dir

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None
    ) -> None:
        state = plain(checkpoint)
        if self.live_dir is not None:
            state[LIVE_ROWS_KEY] = live_snapshot(self.live_dir)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location=lambda storage, loc: storage
    ) -> dict[str, Any]:
        return load_state(path, map_location)


def load_state(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """A resume checkpoint, loaded without unpickling code; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: resume checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: not a safe resume checkpoint ({type(exc).__name__}); delete it to start over"
        ) from exc


class PeriodicCheckpoint(pl.Callback):
    """Overwrite one resume checkpoint every `every_n_steps` optimiser steps and at the end.

    Saved when the batch *after* the step starts: by then Lightning has logged the step
    and advanced its counters, so the checkpoint, the logger's step and the DVCLive
    history snapshot all describe the same moment (saving at the end of the step's own
    batch loses that step's log row and puts the logger one step behind on resume).
    """

    def __init__(self, path: str | os.PathLike, every_n_steps: int) -> None:
        self.path = os.fspath(path)
        self.every_n_steps = max(1, every_n_steps)
        self._last_saved = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._last_saved:
            trainer.save_checkpoint(self.path)
            self._last_saved = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_saved = trainer.global_step  # a resumed run: that state is on disk

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Describe the batch being started as not started: it runs again after a resume.

        Lightning 2.0 counts the batch whose start hook saves as already "ready", so a
        resumed run would count it twice (validation and logger steps drift by one per
        resume). Every batch counter is set to the completed batches, and the logger's
        step to the optimiser steps done.
        """
        loops = copy.deepcopy(checkpoint.get("loops", {}))
        fit = loops.get("fit_loop", {})
        progress = fit.get("epoch_loop.batch_progress")
        if progress:
            for part in ("total", "current"):
                for key in ("ready", "started", "processed"):
                    progress[part][key] = progress[part]["completed"]
        if "epoch_loop.state_dict" in fit:
            fit["epoch_loop.state_dict"]["_batches_that_stepped"] = trainer.global_step
        checkpoint["loops"] = loops


class PeriodicValidation(pl.Callback):
    """Validate the EMA weights every `every_n_steps` optimiser steps and once at the end.

    Run here rather than by Lightning's validation loop, whose schedule counts batches in
    a way a mid-epoch resume does not restore (it re-validates, and the logger's step
    drifts by one per resume). Keyed to the optimiser step alone, a resumed run
    validates and logs at exactly the steps an uninterrupted one does. The loss is the
    training loss at fixed timesteps and noise (`fixed_loss`); the first batch is also
    inpainted and logged as an image, both at ``step = global_step``.
    """

    def __init__(self, ema: WarmupEMA, every_n_steps: int) -> None:
        self.ema = ema
        self.every_n_steps = max(1, every_n_steps)
        self._last = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = -1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, *args: Any, **kwargs) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0:
            self._validate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validate(trainer, pl_module)

    @torch.inference_mode()
    def _validate(self, trainer: pl.Trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self._last or not self.ema.ema_state_dict:
            return
        self._last = step
        backup = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        was_training = pl_module.training
        pl_module.load_state_dict(self.ema.ema_weights(), strict=True)
        pl_module.eval()
        try:
            device = next(pl_module.parameters()).device
            losses, counts = [], []
            for i, batch in enumerate(pl_module.val_dataloader()):
                batch = pl_module._prepare({k: v.to(device) for k, v in batch.items()})
                losses.append(float(pl_module.fixed_loss(batch, i)))
                counts.append(batch["img"].shape[0])
                if i == 0 and trainer.is_global_zero:
                    pl_module.log_inpaintings(batch)
        finally:
            pl_module.load_state_dict(backup, strict=True)
            pl_module.train(was_training)
        value = float(np.average(losses, weights=counts))
        pl_module.last_val_loss = value
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({"val_loss": value}, step=step)


class TrainingInterrupted(RuntimeError):
    """Raised by :class:`HardStop`: stands in for a killed process in tests."""


class HardStop(pl.Callback):
    """Abort the run with an exception after `steps` optimiser steps (no clean shutdown)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step >= self.steps:
            raise TrainingInterrupted(f"hard stop after {trainer.global_step} steps")
