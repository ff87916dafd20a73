"""The Kaggle submission of a predicted folder: every image, six rows, a documented fill.

Rows ``ID_<hex>_<subtype>,Label`` for **every** image ID found in the input folder
(one per file; a repeated ID once), labels in the RSNA order, probabilities clipped
to ``[CLIP, 1 - CLIP]`` (a log loss never meets an exact 0 or 1).

Fill rule: an image that could not be scored (unreadable or incomplete header,
truncated pixel data, a series refused by the stacking checks, a series of the
calibration set) gets the calibrator's label prevalences, the smoothed share of
positive images per label among the labelled calibration slices: the best constant
guess the labelled data allow. Slices left out by the mid-range filter *are* scored:
their map is all zero and the calibrator gives the probability of a zero score, as
evaluate does for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ichinpaint.constants import LABELS
from ichinpaint.evaluation.decision import Calibrator
from ichinpaint.evaluation.submission import submission_frame

CLIP: float = 1e-4
FILL_RULE = "calibration prevalence per label (smoothed), for images that could not be scored"


def build_submission(
    image_ids: list[str], scored: pd.DataFrame, calibrator: Calibrator
) -> tuple[pd.DataFrame, dict[str, int]]:
    """(submission frame, counts). `scored` has ``image_id`` and ``p_<label>`` columns."""
    ids = sorted(set(image_ids))
    probabilities = np.tile(calibrator.fill_row(), (len(ids), 1))
    position = {image_id: i for i, image_id in enumerate(ids)}
    scored = scored.drop_duplicates("image_id")
    unknown = sorted(set(scored["image_id"]) - set(position))
    if unknown:
        raise ValueError(f"scored images not among the input images, e.g. {unknown[0]}")
    index = [position[i] for i in scored["image_id"]]
    probabilities[index] = scored[[f"p_{label}" for label in LABELS]].to_numpy(dtype=float)
    probabilities = np.clip(probabilities, CLIP, 1 - CLIP)
    frame = submission_frame(ids, probabilities)
    counts = {
        "submission_images": len(ids),
        "submission_rows": len(frame),
        "submission_images_scored": len(index),
        "submission_images_filled": len(ids) - len(index),
    }
    assert counts["submission_rows"] == len(LABELS) * counts["submission_images"]
    return frame, counts
