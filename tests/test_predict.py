"""`ichinpaint predict` on a stage_2_test-like folder: shuffled, renamed, several series, no CSV."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from predict_fixtures import (
    CANVAS,
    write_decision_for,
    write_model,
    write_test_like_folder,
)

from ichinpaint import cli
from ichinpaint.constants import LABELS

LONELY_SERIES, LONELY_IMAGE = "ID_10ne1y0001", "ID_10ne1y0002"


def write_lonely_slice(folder):
    """A copy of one slice as a series of its own: it cannot be stacked (single_slice)."""
    import pydicom

    from ichinpaint.dicom import quiet_pydicom

    source = next(p for p in sorted(folder.rglob("img_*")))
    with quiet_pydicom():
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = LONELY_SERIES
        ds.SOPInstanceUID = LONELY_IMAGE
        ds.file_meta.MediaStorageSOPInstanceUID = LONELY_IMAGE
        ds.save_as(folder / "lonely.dcm")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = write_test_like_folder(root / "stage_2_test", root / "scratch")
    (root / "stage_2_test" / "notes.txt").write_text("not a DICOM file\n")
    write_lonely_slice(root / "stage_2_test")
    model_path = write_model(root)
    decision = write_decision_for(root, model_path)
    out = root / "out"
    submission = root / "submission.csv"
    argv = [
        "predict",
        str(root / "stage_2_test"),
        "--out",
        str(out),
        "--decision",
        str(decision),
        "--model",
        str(model_path),
        "--kaggle-submission",
        str(submission),
        "--metrics",
        str(root / "predict.json"),
        "--n_jobs",
        "1",
        "--device",
        "cpu",
        "--chunk_series",
        "2",  # 4 series: two rounds of prepare + detect through one work folder
    ]
    assert cli.main(argv) == 0
    return {"root": root, "out": out, "submission": submission, "data": data, "argv": argv}


def test_every_file_is_accounted_for(predicted):
    out, data = predicted["out"], predicted["data"]
    counts = json.loads((out / "predict.json").read_text())
    files = pd.read_csv(out / "files.csv", keep_default_na=False)
    assert len(files) == data["n_files"] + 2  # + notes.txt and the lonely slice
    assert counts["files_total"] == (
        counts["files_scored"] + counts["files_skipped"] + counts["files_in_refused_series"]
    )
    assert not (out / "work").exists()  # intermediate volumes and PNGs are not kept
    skipped = files[files["status"] == "skipped"]
    assert (skipped["reason"] != "").all()
    assert "unreadable_header" in set(skipped["reason"])  # notes.txt
    assert "corrupt_pixel_data" in set(skipped["reason"])  # the truncated-file quirk
    series = pd.read_csv(out / "series.csv", keep_default_na=False).set_index("series_uid")
    assert tuple(series.loc[LONELY_SERIES, ["status", "reason"]]) == ("refused", "single_slice")
    lonely = files[files["image_id"] == LONELY_IMAGE].iloc[0]
    assert (lonely["status"], lonely["reason"]) == ("series_refused", "single_slice")
    assert counts["not_scored_single_slice"] == 1
    # image IDs come from the headers, not from the (meaningless) file names
    scored = files[files["status"] == "scored"]
    assert set(scored["image_id"]) <= set(data["image_ids"])
    assert not any(i.startswith("img_") for i in scored["image_id"])


def test_per_series_outputs_are_aligned_with_the_series(predicted):
    out = predicted["out"]
    series = pd.read_csv(out / "series.csv", keep_default_na=False)
    scored = series[series["status"] == "scored"]
    assert len(scored) >= 3
    truth = pd.read_csv(predicted["data"]["series_csv"], keep_default_na=False)
    for uid in scored["series_uid"]:
        folder = out / "series" / uid
        table = pd.read_csv(folder / "slices.csv")
        summary = json.loads((folder / "summary.json").read_text())
        anomaly = nib.load(folder / "anomaly.nii.gz")
        detections = nib.load(folder / "detections.nii.gz")
        # the map lies on the series' own grid: native matrix and one slice per image
        rows, cols = summary["native_shape"]
        assert anomaly.shape == (cols, rows, len(table))
        assert detections.shape == anomaly.shape
        assert np.allclose(anomaly.affine, detections.affine)
        assert summary["slices"] == len(table)
        assert summary["flagged_slices"] == int(table["predicted"].sum())
        assert len(summary["params_hash"]) == 64 and len(summary["model_sha256"]) == 64
        assert (
            ((table[[f"p_{x}" for x in LABELS]] >= 0) & (table[[f"p_{x}" for x in LABELS]] <= 1))
            .all()
            .all()
        )
        assert (table["p_any"] >= table["p_intraparenchymal"]).all()
        n_files = int(truth.loc[truth["series_uid"] == uid, "n_slices"].iloc[0])
        assert len(table) == n_files  # ground-truth slices = files that decode
        if summary["largest_detection"] is not None:
            largest = summary["largest_detection"]
            voxel_ml = abs(np.linalg.det(anomaly.affine[:3, :3])) / 1000
            assert largest["volume_ml"] == pytest.approx(largest["voxels"] * voxel_ml)
            assert set(largest["image_ids"]) <= set(table["image_id"])


def test_overlays_are_at_native_resolution(predicted):
    out = predicted["out"]
    pngs = sorted(out.glob("series/*/overlays/*.png"))
    assert pngs, "every scored series gets at least one overlay"
    for path in pngs:
        summary = json.loads((path.parent.parent / "summary.json").read_text())
        rows, cols = summary["native_shape"]
        with Image.open(path) as image:
            assert image.size == (2 * cols, rows)  # CT | CT with the map, full matrix
            assert max(rows, cols) >= CANVAS // 2 > 16  # not the 16 px model grid


def test_kaggle_submission_covers_every_input_image(predicted):
    submission = pd.read_csv(predicted["submission"])
    data = predicted["data"]
    assert list(submission.columns) == ["ID", "Label"]
    # + notes.txt (its file name) and the lonely slice (its SOPInstanceUID)
    assert len(submission) == 6 * (len(data["image_ids"]) + 2)
    ids = submission["ID"].str.rsplit("_", n=1).str[0]
    assert set(data["image_ids"]) <= set(ids)
    labels = submission["ID"].str.rsplit("_", n=1).str[1]
    assert list(labels[:6]) == list(LABELS)
    assert submission["Label"].between(1e-4, 1 - 1e-4).all()
    counts = json.loads((predicted["out"] / "predict.json").read_text())
    assert (
        counts["submission_images"]
        == counts["submission_images_scored"] + counts["submission_images_filled"]
    )
    assert counts["submission_images_filled"] >= 3  # truncated file, notes.txt, lonely slice
    filled = submission[submission["ID"].str.startswith(LONELY_IMAGE)]
    assert filled["Label"].iloc[-1] == pytest.approx(
        json.loads((predicted["root"] / "decision.json").read_text())["calibrator"]["prevalence"][
            "any"
        ]
    )  # the documented fill rule


def test_a_calibration_series_is_never_scored(predicted, tmp_path):
    root, out = predicted["root"], predicted["out"]
    series = pd.read_csv(out / "series.csv", keep_default_na=False)
    uid = series.loc[series["status"] == "scored", "series_uid"].iloc[0]
    decision = write_decision_for(tmp_path, root / "inpainter.ckpt", calibration_series=(uid,))
    argv = list(predicted["argv"])
    argv[argv.index("--decision") + 1] = str(decision)
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    argv[argv.index("--kaggle-submission") + 1] = str(tmp_path / "sub.csv")
    assert cli.main(argv) == 0
    again = pd.read_csv(tmp_path / "out" / "series.csv", keep_default_na=False)
    row = again[again["series_uid"] == uid].iloc[0]
    assert (row["status"], row["reason"]) == ("refused", "in_calibration_set")
    assert not (tmp_path / "out" / "series" / uid).exists()
