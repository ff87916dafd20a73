"""The review app at native resolution, and on a predict output folder."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest
from predict_fixtures import write_decision_for, write_model, write_test_like_folder
from test_app import BLEED, N_SLICES, SCRIPT, metric, write_output_set

from ichinpaint import cli
from ichinpaint.app import native, predictions


def run_page(monkeypatch, *argv: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", *argv])
    return AppTest.from_file(str(SCRIPT), default_timeout=60).run()


def caption(at, index: int = 0) -> str:
    return at.image[index].proto.imgs[0].caption


def test_upsampled_layers_land_where_the_model_grid_put_them():
    grid = np.zeros((32, 32), np.float32)
    grid[10:16, 10:16] = 0.6
    anomaly, detections, truth = native.native_layers(grid, grid > 0, grid > 0, 128, (128, 96))
    assert anomaly.shape == detections.shape == truth.shape == (128, 96)
    # canvas 128 -> model grid 32 is 4x: model rows 10..15 are native rows 40..63; the 96
    # native columns were padded by 16 on each side to the canvas, so columns shift by 16
    rows, cols = np.nonzero(detections)
    assert (rows.min(), rows.max()) == (40, 63)
    assert (cols.min(), cols.max()) == (40 - 16, 63 - 16)
    assert (detections == truth).all()
    assert anomaly.max() == pytest.approx(0.6)


def test_pipeline_page_shows_the_native_ct_when_the_hu_volume_is_there(tmp_path, monkeypatch):
    root = write_output_set(tmp_path)
    at = run_page(monkeypatch, "--root", str(root))
    assert "model grid 32 px" in caption(at)  # no HU volumes yet
    (root / "data/interim/nifti").mkdir(parents=True)
    hu = np.full((128, 128, N_SLICES), 30, np.int16)  # data[col, row, k], 4x the 32-px grid
    nib.save(nib.Nifti1Image(hu, np.eye(4)), root / f"data/interim/nifti/{BLEED}.nii.gz")
    at = run_page(monkeypatch, "--root", str(root))
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="series").value == BLEED
    assert "native 128x128" in caption(at)


@pytest.fixture(scope="module")
def predict_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_app")
    write_test_like_folder(root / "in", root / "scratch", n_patients=2, seed=11)
    model_path = write_model(root)
    decision = write_decision_for(root, model_path)
    argv = ["predict", str(root / "in"), "--out", str(root / "out"), "--decision", str(decision)]
    argv += ["--metrics", str(root / "predict.json")]
    assert cli.main([*argv, "--model", str(model_path), "--n_jobs", "1", "--device", "cpu"]) == 0
    return root / "out"


def test_predict_folder_reads_back_on_the_native_grid(predict_folder):
    counts, series = predictions.read_predictions(predict_folder)
    assert len(series) == counts["series_scored"] == 2
    uid = series["series_uid"].iloc[0]
    result = predictions.load_predicted_series(predict_folder, uid)
    assert result.ct.shape == result.anomaly.shape == result.detections.shape
    assert result.ct.shape[0] == len(result.table)
    assert result.ct.shape[1] >= 64 and result.ct.dtype == np.uint8


def test_page_opens_a_predict_folder(predict_folder, monkeypatch):
    at = run_page(monkeypatch, "--predictions", str(predict_folder))
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "native" in caption(at)
    assert " / " in metric(at, "Slices flagged")
    series = at.sidebar.selectbox(key="series")
    series.select(series.options[-1].split(" ")[0]).run()
    assert not at.exception, at.exception


def test_page_names_a_folder_that_is_not_a_predict_output(tmp_path, monkeypatch):
    at = run_page(monkeypatch, "--predictions", str(tmp_path))
    assert any("not a predict output folder" in e.value for e in at.error)
