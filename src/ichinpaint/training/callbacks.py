"""Lightning callbacks and plugins for a resumable, EMA-tracked training run."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from bkh_pytorch_utils import EMA
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

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


class TrustedCheckpointIO(TorchCheckpointIO):
    """Lightning's own resume state: written atomically, read back with ``weights_only=False``.

    Lightning 2.0 pickles hyper-parameters (an OmegaConf config) into its checkpoints,
    which torch's safe loader refuses. These files are written by this very stage into
    ``models/train_state/`` and read only to resume; the model artefact others load
    (``models/inpainter.ckpt``) is plain tensors, loaded with ``weights_only=True``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location=lambda storage, loc: storage
    ) -> dict[str, Any]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: resume checkpoint not found")
        return torch.load(path, map_location=map_location, weights_only=False)


class PeriodicCheckpoint(pl.Callback):
    """Overwrite one resume checkpoint every `every_n_steps` optimiser steps and at the end."""

    def __init__(self, path: str | os.PathLike, every_n_steps: int) -> None:
        self.path = os.fspath(path)
        self.every_n_steps = max(1, every_n_steps)
        self._last_saved = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._last_saved:
            trainer.save_checkpoint(self.path)
            self._last_saved = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


class TrainingInterrupted(RuntimeError):
    """Raised by :class:`HardStop`: stands in for a killed process in tests."""


class HardStop(pl.Callback):
    """Abort the run with an exception after `steps` optimiser steps (no clean shutdown)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step >= self.steps:
            raise TrainingInterrupted(f"hard stop after {trainer.global_step} steps")
