import math

import numpy as np
import pytest

from ichinpaint.evaluation import metrics as m


def test_auroc_by_hand_and_degenerate():
    # pairs (pos, neg): (0.8>0.1) (0.8>0.4) (0.3>0.1) (0.3<0.4) -> 3/4
    assert m.auroc([1, 0, 1, 0], [0.8, 0.1, 0.3, 0.4]) == pytest.approx(0.75)
    assert m.auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(m.auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(m.auroc([1, 1], [0.1, 0.2]))
    assert math.isnan(m.auroc([], []))


def test_average_precision_by_hand_and_degenerate():
    # ranking: 0.9 (pos) 0.8 (neg) 0.7 (pos): AP = 1/2 * (1 + 2/3)
    assert m.average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(m.average_precision([0, 0], [0.3, 0.1]))
    assert m.average_precision([1, 1], [0.3, 0.1]) == 1.0


def test_sensitivity_specificity():
    y = [1, 1, 1, 0, 0]
    p = [1, 0, 1, 1, 0]
    assert m.sensitivity(y, p) == pytest.approx(2 / 3)
    assert m.specificity(y, p) == pytest.approx(1 / 2)
    assert math.isnan(m.sensitivity([0, 0], [1, 0]))
    assert math.isnan(m.specificity([1, 1], [1, 0]))


def test_dice_by_hand_and_empty():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True
    b[0, 1:] = True
    assert m.dice(a, b) == pytest.approx(2 * 2 / 6)
    assert m.dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(m.dice(np.zeros_like(a), np.zeros_like(a)))
    assert m.dice_from_counts(2, 3, 3) == pytest.approx(2 / 3)


def test_best_dice_is_the_best_threshold():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    # threshold 0.8 -> pred {0,1}: dice 2*2/(2+3) = 0.8; every other threshold is worse
    assert m.best_dice(y, s) == pytest.approx(0.8)
    assert math.isnan(m.best_dice([0, 0], [0.1, 0.2]))
    assert m.best_dice([1, 1], [0.1, 0.2]) == pytest.approx(1.0)


def test_logloss_by_hand_and_clipping():
    assert m.binary_logloss([1, 0], [0.8, 0.4]) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )
    # A confident mistake is clipped at eps, not infinite.
    assert m.binary_logloss([1], [0.0]) == pytest.approx(-math.log(m.LOGLOSS_EPS))
    assert math.isnan(m.binary_logloss([], []))


def test_rsna_weighted_logloss_weights_any_twice():
    y = np.zeros((2, 6))
    y[0, [1, 5]] = 1
    p = np.full((2, 6), 0.5)
    p[:, 5] = [0.9, 0.2]
    per_label = [m.binary_logloss(y[:, j], p[:, j]) for j in range(6)]
    expected = (sum(per_label[:5]) + 2 * per_label[5]) / 7
    assert m.rsna_weighted_logloss(y, p) == pytest.approx(expected)
    with pytest.raises(ValueError):
        m.rsna_weighted_logloss(y[:, :5], p[:, :5])


def test_curves_are_subsampled_and_anchored_and_empty_when_undefined():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    s = rng.random(5000) + y
    roc = m.roc_points(y, s, max_points=100)
    assert len(roc["fpr"]) <= 100
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    pr = m.pr_points(y, s, max_points=100)
    assert len(pr["recall"]) <= 100 and pr["recall"][0] == 1
    assert len(m.roc_points([0, 0], [1, 2])["fpr"]) == 0
    assert len(m.pr_points([0, 0], [1, 2])["recall"]) == 0


def test_nan_to_none():
    assert m.nan_to_none(float("nan")) is None
    assert m.nan_to_none(0.25) == 0.25
