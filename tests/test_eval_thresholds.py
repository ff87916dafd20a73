import inspect

import numpy as np
import pandas as pd
import pytest

from ichinpaint.evaluation import thresholds as th


def validation(pixels, scores, splits=None, labels=None):
    n = len(scores)
    return th.HealthyValidation(
        pixel_values=np.asarray(pixels, float),
        slice_scores=np.asarray(scores, float),
        splits=np.asarray(splits if splits is not None else ["val"] * n),
        any_labels=np.asarray(labels if labels is not None else [0] * n),
    )


def test_healthy_validation_refuses_test_or_diseased_slices():
    with pytest.raises(ValueError, match="'test'"):
        validation([0.1], [0.1, 0.2], splits=["val", "test"])
    with pytest.raises(ValueError, match="hemorrhage"):
        validation([0.1], [0.1, 0.2], labels=[0, 1])
    with pytest.raises(ValueError, match="one entry per slice"):
        validation([0.1], [0.1, 0.2], splits=["val"])


def test_choosers_accept_nothing_but_healthy_validation():
    frame = pd.DataFrame({"pixel_values": [0.1], "split": ["test"]})
    for chooser in (th.pixel_threshold, th.slice_threshold):
        with pytest.raises(TypeError, match="HealthyValidation"):
            chooser(frame, 0.5)
    # The signature leaves no room for anything else: one data argument.
    params = inspect.signature(th.choose_thresholds).parameters
    assert [p for p in params if params[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD] == [
        "validation"
    ]


def test_pixel_threshold_is_the_percentile():
    v = validation(np.arange(101) / 100, [0.0])
    assert th.pixel_threshold(v, 99) == pytest.approx(0.99)
    assert th.pixel_threshold(v, 50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no healthy"):
        th.pixel_threshold(validation([], [0.0]), 99)


def test_slice_threshold_meets_the_target_fpr():
    scores = np.arange(1, 21) / 20  # 20 healthy slices
    v = validation([0.0], scores)
    t = th.slice_threshold(v, 0.1)
    assert (scores > t).mean() <= 0.1
    assert (scores > t).sum() == 2  # as many false positives as allowed
    assert (scores > th.slice_threshold(v, 0.0)).sum() == 0
    ties = validation([0.0], [0.5] * 10)
    assert (np.full(10, 0.5) > th.slice_threshold(ties, 0.3)).sum() == 0


def test_choose_thresholds_modes_and_decisions():
    v = validation(np.linspace(0, 1, 11), np.arange(10) / 10)
    pct = th.choose_thresholds(
        v, mode="percentile", percentile=90, target_fpr=0.2, reduction="score_max"
    )
    assert pct.pixel_threshold == pytest.approx(0.9)
    assert pct.decision_score == "detected_px"
    assert list(pct.slice_positive(np.array([0, 3]), np.array([9.0, 0.0]))) == [False, True]
    fpr = th.choose_thresholds(v, mode="fpr", percentile=90, target_fpr=0.2, reduction="score_max")
    assert fpr.slice_threshold == pytest.approx(0.7)
    assert list(fpr.slice_positive(np.array([5, 0]), np.array([0.7, 0.8]))) == [False, True]
    with pytest.raises(ValueError, match="threshold_mode"):
        th.choose_thresholds(v, mode="oracle", percentile=90, target_fpr=0.2, reduction="score_max")
