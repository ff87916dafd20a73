"""Per-slice probability of "any hemorrhage", cross-fitted by patient.

A slice score is turned into a probability with a logistic regression on the
chosen reduction. The regression needs labels, and the only labelled slices we
may report on are the test slices themselves, so it is cross-fitted: patients are
split into folds (GroupKFold) and each slice's probability comes from a model
fitted on the other folds' patients only, never on its own patient.

Degenerate cases have fixed answers: a training fold with a single class predicts
its smoothed prevalence ``(positives + 0.5) / (slices + 1)``; with fewer than two
patients there is nobody else to learn from and every probability is 0.5.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

UNINFORMATIVE: float = 0.5


def patient_folds(groups: np.ndarray, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs; a patient is never on both sides. [] if < 2 patients."""
    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return []
    splitter = GroupKFold(n_splits=min(int(n_splits), n_groups))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def smoothed_prevalence(y: np.ndarray) -> float:
    """(positives + 0.5) / (n + 1): a prevalence that is never exactly 0 or 1."""
    y = np.asarray(y, dtype=float)
    return float((y.sum() + 0.5) / (y.size + 1))


def fit_predict(
    features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """Probabilities for `test` from a logistic regression fitted on `train` only."""
    y_train = np.asarray(y)[train].astype(int)
    if len(np.unique(y_train)) < 2:
        return np.full(len(test), smoothed_prevalence(y_train))
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(features[train], y_train)
    return model.predict_proba(features[test])[:, 1]


def crossfit_probabilities(
    features: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_splits: int = 5
) -> np.ndarray:
    """Out-of-patient probability per slice. `features` is ``(n,)`` or ``(n, f)``."""
    features = np.asarray(features, dtype=float)
    if features.ndim == 1:
        features = features[:, None]
    prob = np.full(len(features), UNINFORMATIVE)
    for train, test in patient_folds(groups, n_splits):
        prob[test] = fit_predict(features, y, train, test)
    return prob


def crossfit_subtype_shares(
    subtype_labels: np.ndarray, any_labels: np.ndarray, groups: np.ndarray, *, n_splits: int = 5
) -> np.ndarray:
    """Per slice and subtype, the share of positive slices with that subtype, out of patient.

    Computed on the other patients' positive slices as ``(count + 0.5) / (positives + 1)``
    (so a subtype never seen gets a small, non-zero share); uniform 1/n_subtypes with
    fewer than two patients. Shares can sum above 1: subtypes co-occur.
    """
    subtype_labels = np.asarray(subtype_labels, dtype=float)
    any_labels = np.asarray(any_labels).astype(bool)
    shares = np.full(subtype_labels.shape, 1.0 / subtype_labels.shape[1])
    for train, test in patient_folds(groups, n_splits):
        positives = subtype_labels[train][any_labels[train]]
        shares[test] = (positives.sum(axis=0) + 0.5) / (len(positives) + 1)
    return shares
