"""Patient-level split and whole-series subsampling."""

from __future__ import annotations

import pytest

from ichinpaint import splits


def patients(n_healthy: int, n_sick: int) -> dict[str, bool]:
    return {f"H{i:03d}": False for i in range(n_healthy)} | {
        f"S{i:03d}": True for i in range(n_sick)
    }


def test_hemorrhage_patients_go_to_test_and_fractions_hold():
    mapping = splits.split_patients(
        patients(100, 30), val_fraction=0.15, test_healthy_fraction=0.1, seed=0
    )
    assert all(mapping[f"S{i:03d}"] == "test" for i in range(30))
    healthy = [mapping[f"H{i:03d}"] for i in range(100)]
    assert (healthy.count("val"), healthy.count("test"), healthy.count("train")) == (15, 10, 75)


def test_split_is_seeded_and_independent_of_input_order():
    given = patients(40, 5)
    a = splits.split_patients(given, val_fraction=0.2, test_healthy_fraction=0.2, seed=3)
    b = splits.split_patients(
        dict(reversed(list(given.items()))), val_fraction=0.2, test_healthy_fraction=0.2, seed=3
    )
    c = splits.split_patients(given, val_fraction=0.2, test_healthy_fraction=0.2, seed=4)
    assert a == b
    assert a != c


def test_small_cohorts_still_get_every_split():
    mapping = splits.split_patients(
        patients(3, 0), val_fraction=0.05, test_healthy_fraction=0.05, seed=0
    )
    assert sorted(mapping.values()) == ["test", "train", "val"]


@pytest.mark.parametrize(("n_healthy", "n_sick"), [(2, 0), (1, 5), (0, 3)])
def test_too_few_patients_is_a_clear_error(n_healthy, n_sick):
    with pytest.raises(splits.SplitError, match="cannot fill train"):
        splits.split_patients(
            patients(n_healthy, n_sick), val_fraction=0.15, test_healthy_fraction=0.15, seed=0
        )


def test_validation_cannot_be_switched_off():
    with pytest.raises(splits.SplitError, match="val_fraction"):
        splits.split_patients(patients(10, 1), val_fraction=0, test_healthy_fraction=0.1, seed=0)


def test_subsample_keeps_whole_series_close_to_the_fraction():
    sizes = {f"s{i}": 30 for i in range(20)}
    kept = splits.subsample_series(sizes, 0.25, seed=1)
    assert len(kept) == 5  # 150 of 600 images
    assert kept <= set(sizes)
    assert splits.subsample_series(sizes, 1.0, seed=1) == set(sizes)
    assert len(splits.subsample_series(sizes, 0.001, seed=1)) == 1
    with pytest.raises(splits.SplitError):
        splits.subsample_series(sizes, 0, seed=1)
