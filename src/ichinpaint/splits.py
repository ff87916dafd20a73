"""Patient-level train/val/test split and whole-series subsampling of the training data.

Slices of one patient are strongly correlated, so a split by slice would leak: every
patient goes to exactly one split. The model learns healthy anatomy only, so every
patient with any hemorrhage goes to test, together with a share of healthy patients
(for false-positive rates on test); validation is healthy only (thresholds are chosen
on healthy maps); everything else trains.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """Too few patients for a split with non-empty train, val and test."""


def _count(fraction: float, n: int, minimum: int) -> int:
    return max(minimum, int(round(fraction * n))) if fraction > 0 else 0


def split_patients(
    hemorrhage_by_patient: Mapping[str, bool],
    *,
    val_fraction: float,
    test_healthy_fraction: float,
    seed: int,
) -> dict[str, str]:
    """Map each patient to train/val/test; seeded and independent of the mapping's order.

    Hemorrhage patients -> test; of the healthy ones, `test_healthy_fraction` -> test and
    `val_fraction` -> val (each at least one patient when its fraction is > 0), the rest
    -> train. Raises SplitError unless train, val and test all end up non-empty.
    """
    for name, value in (
        ("val_fraction", val_fraction),
        ("test_healthy_fraction", test_healthy_fraction),
    ):
        if not 0 <= value < 1:
            raise SplitError(f"{name} must be in [0, 1), got {value}")
    if val_fraction == 0:
        raise SplitError("val_fraction must be > 0: thresholds are chosen on healthy validation")
    sick = sorted(p for p, h in hemorrhage_by_patient.items() if h)
    healthy = np.array(sorted(p for p, h in hemorrhage_by_patient.items() if not h), dtype=object)
    healthy = healthy[np.random.default_rng(seed).permutation(len(healthy))]
    n_test = _count(test_healthy_fraction, len(healthy), minimum=0 if sick else 1)
    n_val = _count(val_fraction, len(healthy), minimum=1)
    n_train = len(healthy) - n_test - n_val
    if n_train < 1 or n_test + len(sick) < 1:
        raise SplitError(
            f"{len(healthy)} healthy and {len(sick)} hemorrhage patient(s) cannot fill train, "
            f"val and test (val {n_val}, healthy test {n_test}, train {n_train}); "
            "add patients or lower val_fraction / test_healthy_fraction"
        )
    split = dict.fromkeys(sick, "test")
    split.update(dict.fromkeys(healthy[:n_test], "test"))
    split.update(dict.fromkeys(healthy[n_test : n_test + n_val], "val"))
    split.update(dict.fromkeys(healthy[n_test + n_val :], "train"))
    return split


def subsample_series(series_sizes: Mapping[str, int], fraction: float, seed: int) -> set[str]:
    """Whole series to keep so that about `fraction` of the images remain (at least one series).

    Whole series, not single slices, so every kept slice still has its neighbours
    above and below (the model is conditioned on them). Series are taken in a seeded
    random order until the kept images reach the target.
    """
    if not 0 < fraction <= 1:
        raise SplitError(f"fraction must be in (0, 1], got {fraction}")
    names = sorted(series_sizes)
    if fraction == 1 or not names:
        return set(names)
    order = np.random.default_rng(seed).permutation(len(names))
    target = fraction * sum(series_sizes.values())
    kept: set[str] = set()
    total = 0
    for i in order:
        if kept and total >= target:
            break
        kept.add(names[i])
        total += series_sizes[names[i]]
    return kept
