"""Kaggle-format predictions: ``ID,Label`` with six rows per image in the RSNA order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ichinpaint.constants import LABELS, SUBTYPES


def label_probabilities(p_any: np.ndarray, subtype_shares: np.ndarray) -> np.ndarray:
    """``(n, 6)`` probabilities in LABELS order: subtype = p_any x its out-of-fold share.

    A subtype can never be more likely than "any", which keeps the rows coherent.
    """
    p_any = np.clip(np.asarray(p_any, dtype=float), 0.0, 1.0)
    shares = np.clip(np.asarray(subtype_shares, dtype=float), 0.0, 1.0)
    if shares.shape != (len(p_any), len(SUBTYPES)):
        raise ValueError(
            f"subtype shares must be ({len(p_any)}, {len(SUBTYPES)}), got {shares.shape}"
        )
    return np.column_stack([p_any[:, None] * shares, p_any])


def submission_frame(image_ids: Sequence[str], probabilities: np.ndarray) -> pd.DataFrame:
    """Rows ``ID_<hex>_<label>`` for each image, labels in the RSNA order."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(image_ids), len(LABELS)):
        raise ValueError(
            f"probabilities must be ({len(image_ids)}, {len(LABELS)}), got {probabilities.shape}"
        )
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("image ids must be unique in a submission")
    ids = [f"{image_id}_{label}" for image_id in image_ids for label in LABELS]
    return pd.DataFrame({"ID": ids, "Label": probabilities.reshape(-1)})
