"""The decision artifact: the calibrator's procedure, the file format and its version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ichinpaint.constants import LABELS
from ichinpaint.evaluation.decision import (
    build_decision,
    fit_calibrator,
    read_decision,
    write_decision,
)
from ichinpaint.evaluation.thresholds import Thresholds


def labelled(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    scores = rng.normal(0.1 + 0.2 * y, 0.05)
    labels = np.zeros((n, len(LABELS)), int)
    labels[:, -1] = y
    labels[y == 1, 4] = 1  # subdural
    return scores, labels


def calibrator(scores, labels, series=None):
    n = len(scores)
    series = series if series is not None else np.array([f"S{i % 5}" for i in range(n)])
    return fit_calibrator(
        scores, labels, np.array([f"P{i % 5}" for i in range(n)]), series, score_name="score_max"
    )


def test_platt_folded_into_slope_and_intercept_equals_the_fitted_pipeline():
    scores, labels = labelled()
    cal = calibrator(scores, labels)
    reference = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        scores[:, None], labels[:, -1]
    )
    new = np.linspace(-0.2, 0.6, 17)
    assert np.allclose(cal.p_any(new), reference.predict_proba(new[:, None])[:, 1], atol=1e-9)
    probs = cal.probabilities(new)
    assert probs.shape == (17, 6)
    assert (probs[:, :5] <= probs[:, 5:6] + 1e-12).all()  # a subtype never above "any"
    assert probs[:, 4].max() > probs[:, 0].max()  # subdural was seen, epidural never


def test_one_class_calibration_gives_the_smoothed_prevalence():
    scores, labels = labelled()
    labels[:] = 0
    cal = calibrator(scores, labels)
    assert cal.slope == 0
    assert cal.p_any(np.array([0.0, 10.0])) == pytest.approx([0.5 / 81, 0.5 / 81])
    assert cal.fill_row()[-1] == pytest.approx(0.5 / 81)


def test_calibrator_records_its_series_so_predict_can_refuse_them(tmp_path):
    scores, labels = labelled()
    series = np.array(["ID_b", "ID_a"] * 40)
    decision = build_decision(
        canvas=256,
        img_size=64,
        detect={"strategy": "onestep"},
        erosion_px=0,
        median_size=3,
        min_component_px=4,
        consistency_3d=False,
        thresholds=Thresholds("fpr", 0.1, 0.2, "score_max"),
        reduction="score_max",
        calibrator=calibrator(scores, labels, series),
    )
    path = tmp_path / "decision.json"
    write_decision(path, decision)
    again = read_decision(path)
    assert again == decision
    assert again.calibrator.series_uids == ("ID_a", "ID_b")
    assert again.slice_rule() == Thresholds("fpr", 0.1, 0.2, "score_max")
    assert again.sha256() == decision.sha256()


def test_later_versions_and_extra_keys(tmp_path):
    scores, labels = labelled()
    decision = build_decision(
        canvas=256,
        img_size=64,
        detect=None,
        erosion_px=0,
        median_size=3,
        min_component_px=4,
        consistency_3d=False,
        thresholds=Thresholds("percentile", 0.1, 0.0, "detected_px"),
        reduction="score_max",
        calibrator=calibrator(scores, labels),
    )
    path = tmp_path / "decision.json"
    write_decision(path, decision)
    data = json.loads(path.read_text())
    data["normaliser"] = {"kind": "future"}  # a field a later version may add
    path.write_text(json.dumps(data))
    assert read_decision(path).extra == {"normaliser": {"kind": "future"}}
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"decision\.json: decision version 99"):
        read_decision(path)
    with pytest.raises(FileNotFoundError, match="evaluate"):
        read_decision(tmp_path / "missing.json")
