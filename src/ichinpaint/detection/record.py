"""The detect settings as a plain record (``<detections>/settings.json``), and back.

The detect stage writes this record beside the maps; evaluate copies it into the
decision artifact so that `predict` runs detection with exactly the settings the
thresholds were chosen for, and can check that it uses the same model (its hash).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ichinpaint.detection.settings import DetectSettings, settings_from_record

__all__ = ["RECORD_VERSION", "file_sha256", "settings_from_record", "settings_record"]

RECORD_VERSION = 1


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def settings_record(
    settings: DetectSettings, *, img_size: int, model_sha256: str
) -> dict[str, Any]:
    """What decides the maps: strategy, grid, combination, seed, geometry and the model."""
    return {
        "version": RECORD_VERSION,
        **settings.record(),
        "img_size": int(img_size),
        "model_sha256": model_sha256,
    }
