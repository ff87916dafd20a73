"""The Lightning module: mediffusion's ``DiffusionModule`` adapted to this project.

What changes against mediffusion as shipped, and why:

- dataloaders are built here (mediffusion's fail with 0 workers: ``prefetch_factor``);
- the optimiser is AdamW with a short linear warm-up and a cosine decay, since the
  default CPU run has only a few hundred steps (mediffusion: Lion, constant rate);
- the loss can weigh the hidden squares above the visible pixels (`known_weight`,
  `ichinpaint.training.loss`);
- validation computes the loss at fixed timesteps and noise (comparable between
  validations) and logs a few inpaintings as a PNG through DVCLive instead of wandb;
- inputs go channels-last when asked (faster convolutions on CPU and GPU);
- every random draw of a training step (timesteps, noise, the sample order, the
  augmentation and the masks) is a function of the run's seed and the step's position
  in the sample stream, never of a global RNG state, so a run resumed from a checkpoint
  continues exactly as the uninterrupted run would (`TrainingStream`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from mediffusion import DiffusionModule
from omegaconf import OmegaConf

from ichinpaint.model import conditioning_channel, draw_noise
from ichinpaint.training.dataset import PositionSampler, TrainingStream, stream_seed
from ichinpaint.training.loss import denoising_loss

VAL_DDIM_STEPS = 20
VAL_IMAGES_LOGGED = 4


class InpaintingModule(DiffusionModule):
    """DiffusionModule with our dataloaders, optimiser schedule and DVCLive validation images."""

    def __init__(
        self,
        config_file: str,
        *,
        max_steps: int,
        warmup_fraction: float = 0.05,
        min_lr_fraction: float = 0.1,
        num_workers: int = 0,
        channels_last: bool = False,
        seed: int = 0,
        accumulate_grad_batches: int = 1,
        known_weight: float = 1.0,
        noise_cell: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(config_file, **kwargs)
        # mediffusion records its OmegaConf config as hparams; loggers (DVCLive) and the
        # checkpoint want plain containers.
        self.save_hyperparameters(OmegaConf.to_container(self.config, resolve=True))
        self.max_steps_planned = max_steps
        self.warmup_fraction = warmup_fraction
        self.min_lr_fraction = min_lr_fraction
        self.num_workers = num_workers
        self.seed = seed
        self.accumulate_grad_batches = accumulate_grad_batches
        self.known_weight = known_weight
        self.noise_cell = noise_cell
        self.use_channels_last = channels_last
        self.recent_train_losses: list[float] = []
        self.last_val_loss: float = float("nan")
        self.resumed_from_step = 0
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    # -- resume ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["recent_train_losses"] = list(self.recent_train_losses)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.recent_train_losses = list(checkpoint.get("recent_train_losses", []))
        self.resumed_from_step = int(checkpoint.get("global_step", 0))

    # -- data -----------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool, drop_last: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last and len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """The rest of the run's sample stream for this rank (resumes where the run stands)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        per_step = self.batch_size * self.accumulate_grad_batches * world
        sampler = PositionSampler(
            total=self.max_steps_planned * per_step,
            start=lambda: self.trainer.global_step * per_step,
            rank=self.global_rank,
            world=world,
        )
        return torch.utils.data.DataLoader(
            TrainingStream(self.train_ds, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.val_ds, shuffle=False, drop_last=False)

    def _prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.use_channels_last:
            return batch
        return {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}

    # -- optimisation ---------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to `min_lr_fraction` at `max_steps_planned`."""
        warmup = max(1, round(self.warmup_fraction * self.max_steps_planned))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.max_steps_planned - warmup))
        return self.min_lr_fraction + (1 - self.min_lr_fraction) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": 5e-4},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # Lightning's mixed-precision plugin refuses gradient clipping with a fused AdamW
        # (it unscales inside its step): only full precision gets the fused kernel.
        mixed = self._trainer is not None and "mixed" in str(self._trainer.precision)
        fused = not mixed and torch.cuda.is_available() and next(self.model.parameters()).is_cuda
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.99), fused=fused or None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- steps ----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        """mediffusion's loss, with timesteps and noise drawn from the batch's stream position."""
        batch = dict(batch)
        position = batch.pop("position", None)
        key = int(position[0]) if position is not None else self.global_step
        seed = stream_seed(self.seed, key, 1)
        torch.manual_seed(seed)  # anything drawing from torch's global RNG (dropout)
        loss = self.seeded_loss(self._prepare(batch), seed)
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=False)
        self.recent_train_losses = (self.recent_train_losses + [float(loss.detach())])[-50:]
        return loss

    def fixed_loss(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The training loss at timesteps and noise fixed by `batch_idx` (same every validation)."""
        return self.seeded_loss(batch, 10_000 + batch_idx)

    def seeded_loss(self, batch: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
        """The diffusion loss at uniform timesteps and the spec's noise drawn from `seed`."""
        x_start = batch["img"]
        gen = torch.Generator(device="cpu").manual_seed(seed)
        ts = torch.randint(0, self.diffusion.num_timesteps, (x_start.shape[0],), generator=gen)
        noise = draw_noise(x_start.shape, self.noise_cell, generator=gen).to(x_start)
        loss = denoising_loss(
            self.diffusion,
            self.model,
            x_start,
            ts.to(x_start.device),
            noise,
            batch["concat"],
            known_weight=self.known_weight,
        )
        return loss.mean()

    @torch.inference_mode()
    def validation_step(self, batch, batch_idx):
        batch = self._prepare(batch)
        loss = self.fixed_loss(batch, batch_idx)
        self.log(
            "val_loss",
            loss,
            on_epoch=True,
            on_step=False,
            sync_dist=True,
            batch_size=batch["img"].shape[0],
        )
        if batch_idx == 0 and self.global_rank == 0:
            self.log_inpaintings(batch)
        return loss

    def on_validation_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("val_loss")
        if value is not None:
            self.last_val_loss = float(value)

    def inpaint(self, batch: dict[str, torch.Tensor], steps: int = VAL_DDIM_STEPS) -> torch.Tensor:
        """DDIM from noise under the conditioning, known pixels pasted back: ``(B, 1, H, W)``."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(batch["img"].shape, generator=gen)
        samples = self.predict(
            noise, inference_protocol=f"DDIM{steps}", model_kwargs={"concat": batch["concat"]}
        )
        painted = torch.stack(samples).to(batch["img"].device, torch.float32)
        hidden = conditioning_channel(batch["concat"], "inpaint_mask").float()
        return batch["img"].float() * (1 - hidden) + painted * hidden

    def log_inpaintings(self, batch: dict[str, torch.Tensor]) -> None:
        """One PNG per validation: rows = slices; columns = original, input, inpainted, |diff|."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "log_image"):
            return
        n = min(VAL_IMAGES_LOGGED, batch["img"].shape[0])
        small = {k: v[:n] for k, v in batch.items()}
        painted = self.inpaint(small)
        panel = inpainting_panel(
            small["img"],
            conditioning_channel(small["concat"], "known_image"),
            conditioning_channel(small["concat"], "inpaint_mask"),
            painted,
        )
        experiment.log_image(f"inpaintings/{self.global_step:06d}.png", panel)


def inpainting_panel(
    original: torch.Tensor, known: torch.Tensor, hidden: torch.Tensor, painted: torch.Tensor
) -> np.ndarray:
    """uint8 grid of (original, input with hole, inpainted, |difference| x2) per slice."""

    def to_uint8(x: torch.Tensor) -> np.ndarray:
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()

    known_shown = known * (1 - hidden) + hidden  # the hole shown white
    diff = (original - painted).abs().clamp(0, 1) * 2 - 1  # |diff| in brain-window units, x2
    rows = []
    for i in range(original.shape[0]):
        tiles = [to_uint8(t[i, 0]) for t in (original, known_shown, painted, diff)]
        rows.append(np.concatenate(tiles, axis=1))
    panel = np.concatenate(rows, axis=0)
    return np.kron(panel, np.ones((2, 2), dtype=np.uint8)) if panel.shape[0] < 256 else panel
