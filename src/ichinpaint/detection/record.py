"""The detect settings as a plain record (``<detections>/settings.json``), and back.

The detect stage writes this record beside the maps; evaluate copies it into the
decision artifact so that `predict` runs detection with exactly the settings the
thresholds were chosen for, and can check that it uses the same model (its hash).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ichinpaint.detection.runner import DetectSettings
from ichinpaint.detection.strategies import Strategy

RECORD_VERSION = 1


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def settings_record(
    settings: DetectSettings, *, canvas: int, img_size: int, model_sha256: str
) -> dict[str, Any]:
    """What decides the maps: strategy, grid, combination, seed, geometry and the model."""
    s = settings.strategy
    return {
        "version": RECORD_VERSION,
        "strategy": s.name,
        "ddim_steps": s.ddim_steps,
        "start_fraction": s.start_fraction,
        "jump_length": s.jump_length,
        "jump_n_sample": s.jump_n_sample,
        "noise_levels": list(s.noise_levels),
        "sizes": list(settings.sizes_at_256),
        "offsets": settings.offsets,
        "combine": settings.combine,
        "seed": settings.seed,
        "sign": settings.sign,
        "hu_gate": settings.hu_gate,
        "mirror": settings.mirror,
        "gate_hu": list(settings.gate_band),
        "baseline_hu": list(settings.baseline_band),
        "canvas": int(canvas),
        "img_size": int(img_size),
        "model_sha256": model_sha256,
    }


def settings_from_record(record: dict[str, Any], batch_size: int) -> DetectSettings:
    """The `DetectSettings` of a record (`batch_size` is a runtime choice, not recorded)."""
    try:
        strategy = Strategy(
            name=record["strategy"],
            ddim_steps=int(record["ddim_steps"]),
            start_fraction=float(record["start_fraction"]),
            jump_length=int(record["jump_length"]),
            jump_n_sample=int(record["jump_n_sample"]),
            noise_levels=tuple(record["noise_levels"]),
        )
        return DetectSettings(
            strategy=strategy,
            sizes_at_256=tuple(int(v) for v in record["sizes"]),
            offsets=bool(record["offsets"]),
            combine=str(record["combine"]),
            batch_size=int(batch_size),
            seed=int(record["seed"]),
            sign=str(record["sign"]),
            hu_gate=bool(record["hu_gate"]),
            gate_band=tuple(float(v) for v in record["gate_hu"]),
            baseline_band=tuple(float(v) for v in record["baseline_hu"]),
            mirror=bool(record.get("mirror", False)),  # records before the option: off
        )
    except KeyError as error:
        raise ValueError(f"detect settings record lacks {error}") from error
