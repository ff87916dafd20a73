import re

import numpy as np
import pytest

from ichinpaint.constants import LABELS
from ichinpaint.evaluation import submission as sub


def test_submission_has_six_rows_per_image_in_rsna_order():
    ids = ["ID_0a1b2c3d4", "ID_ffffffff0"]
    probs = sub.label_probabilities(np.array([0.8, 0.1]), np.full((2, 5), 0.5))
    frame = sub.submission_frame(ids, probs)
    assert list(frame.columns) == ["ID", "Label"]
    assert len(frame) == 12
    assert list(frame["ID"][:6]) == [f"ID_0a1b2c3d4_{label}" for label in LABELS]
    assert all(
        re.fullmatch(
            r"ID_[0-9a-f]+_(epidural|intraparenchymal|intraventricular|subarachnoid|subdural|any)",
            i,
        )
        for i in frame["ID"]
    )
    assert frame["Label"].between(0, 1).all()
    assert frame["Label"][5] == pytest.approx(0.8)  # any
    assert frame["Label"][0] == pytest.approx(0.4)  # epidural = p_any x share


def test_subtypes_never_exceed_any_and_probabilities_are_clipped():
    probs = sub.label_probabilities(np.array([1.5, -0.2]), np.full((2, 5), 2.0))
    assert (probs >= 0).all() and (probs <= 1).all()
    assert (probs[:, :5] <= probs[:, 5:]).all()


def test_submission_refuses_bad_shapes_and_duplicates():
    with pytest.raises(ValueError):
        sub.submission_frame(["ID_a"], np.zeros((1, 5)))
    with pytest.raises(ValueError, match="unique"):
        sub.submission_frame(["ID_a", "ID_a"], np.zeros((2, 6)))
    with pytest.raises(ValueError):
        sub.label_probabilities(np.zeros(2), np.zeros((2, 4)))
