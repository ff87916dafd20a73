import numpy as np
import pytest

from ichinpaint.evaluation import calibration as cal


def test_folds_never_share_a_patient():
    groups = np.repeat([f"p{i}" for i in range(7)], 3)
    folds = cal.patient_folds(groups, 5)
    assert len(folds) == 5
    held = np.concatenate([test for _, test in folds])
    assert sorted(held) == list(range(len(groups)))  # every slice predicted once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert len(cal.patient_folds(groups[:6], 5)) == 2  # two patients -> two folds
    assert cal.patient_folds(np.array(["a", "a"]), 5) == []


def test_probability_never_comes_from_the_slices_own_patient():
    # Identical scores everywhere: the only thing a model could learn is the label
    # rate of the patients it was fitted on. Patient "sick" is the only positive one.
    groups = np.array(["sick"] * 4 + ["h1"] * 4 + ["h2"] * 4 + ["h3"] * 4)
    y = np.array([1] * 4 + [0] * 12)
    p = cal.crossfit_probabilities(np.zeros(16), y, groups, n_splits=4)
    # Fitted without "sick", its slices get the others' smoothed prevalence 0.5 / (12 + 1).
    assert p[:4] == pytest.approx(np.full(4, 0.5 / 13))
    # The healthy patients' models saw the sick patient, so they predict higher.
    assert (p[4:] > p[:4].max()).all()


def test_crossfit_learns_a_monotone_score_out_of_patient():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 20).astype(str)
    y = rng.random(200) < 0.4
    score = y * 1.0 + rng.normal(0, 0.3, 200)
    p = cal.crossfit_probabilities(score, y, groups, n_splits=5)
    assert ((p > 0) & (p < 1)).all()
    assert p[y].mean() > p[~y].mean() + 0.3


def test_single_patient_gets_the_uninformative_probability():
    p = cal.crossfit_probabilities(np.arange(4.0), np.array([0, 1, 0, 1]), np.array(["a"] * 4))
    assert p == pytest.approx(np.full(4, 0.5))


def test_subtype_shares_are_out_of_patient():
    groups = np.array(["a", "a", "b", "b"])
    any_ = np.array([1, 0, 1, 1])
    sub = np.zeros((4, 5))
    sub[0, 0] = 1  # patient a: epidural
    sub[2, 3] = 1  # patient b: subarachnoid, twice
    sub[3, 3] = 1
    shares = cal.crossfit_subtype_shares(sub, any_, groups, n_splits=2)
    # a's shares come from b's two positive slices: (count + 0.5) / 3
    assert shares[0] == pytest.approx([0.5 / 3, 0.5 / 3, 0.5 / 3, 2.5 / 3, 0.5 / 3])
    # b's from a's single positive slice: (count + 0.5) / 2
    assert shares[2] == pytest.approx([1.5 / 2, 0.25, 0.25, 0.25, 0.25])
