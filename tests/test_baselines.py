"""The no-model baseline, the HU gate, the signed anomaly and false-positive attribution."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from test_detect import CANVAS, SERIES, brain_disc, write_dataset

from ichinpaint import cli, volume
from ichinpaint.constants import MIMIC_CODES
from ichinpaint.detection import hu
from ichinpaint.detection.anomaly import difference_in_window_units
from ichinpaint.evaluation.truth import FP_KINDS, attribute_components, rim_band


def head_slice(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A native HU slice: brain at 32 HU in a 1500 HU skull, a bleed and a calcification."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    hu_slice = np.where(r < 30, 1500.0, -1000.0)
    hu_slice[r < 26] = 32.0
    hu_slice[20:28, 12:20] = 70.0  # an acute bleed, 8 x 8 native pixels
    # A calcified choroid plexus: a 300 HU core, and around it the partial volume of
    # the 5 mm slab (the fleck fills part of the slab): 60-95 HU, as on real scans.
    hu_slice[36:44, 40:48] = 80.0
    hu_slice[39:41, 43:45] = 300.0
    return hu_slice, r < 26


def test_hu_threshold_is_high_on_a_bleed_and_on_a_calcification_alike():
    """Why hu_threshold is a baseline and not the answer: partial-volume calcification,
    venous sinuses and bone rims sit in the acute-blood band just as blood does, so a
    rule on HU alone cannot tell them apart. The gate keeps the bleed and drops the
    dense core, which is all that HU can do; the rest is the model's job."""
    hu_slice, _ = head_slice()
    band = hu.band_fraction(hu_slice, hu.BASELINE_BAND_HU, canvas=64, img_size=16)
    bleed = band[5:7, 3:5]  # model pixels fully inside the bleed (4 native px each)
    calcification = band[9:11, 10:12]
    assert bleed.min() == pytest.approx(1.0)
    assert calcification.max() >= 0.75  # as high as blood: the baseline is fooled
    assert band[8, 8] == 0  # plain brain
    gate = hu.band_fraction(hu_slice, hu.GATE_BAND_HU, canvas=64, img_size=16)
    assert gate[5:7, 3:5].min() == pytest.approx(1.0)  # the bleed passes the gate
    assert gate[9:11, 10:12].min() < 1.0  # the 300 HU core is cut out of its model pixels
    assert gate[0, 0] == 0  # air outside the head


def test_positive_sign_ignores_darker_than_healthy():
    original = torch.tensor([[-0.5, 0.5]])
    inpainted = torch.tensor([[0.0, 0.0]])
    assert difference_in_window_units(original, inpainted).tolist() == [[0.25, 0.25]]
    assert difference_in_window_units(original, inpainted, "positive").tolist() == [[0.0, 0.25]]
    with pytest.raises(ValueError, match="sign"):
        difference_in_window_units(original, inpainted, "both")


def _with_hu(root) -> None:
    """Give the test_detect volumes real HU: brain 30 HU, a 70 HU bleed where the PNG has one."""
    for uid, _, _, bleed in SERIES:
        path = root / "data/interim/nifti" / f"{uid}.nii.gz"
        image = nib.load(path)
        data = np.full(image.shape, 30, np.int16)
        if bleed is not None:
            native = np.full(image.shape[:2][::-1], 30, np.int16)  # [row, col]
            native[:8, :8] = 70
            data[:, :, bleed] = native.T
        nib.save(nib.Nifti1Image(data, image.affine), path)


def test_detect_stage_hu_threshold_needs_no_model(tmp_path):
    write_dataset(tmp_path)
    _with_hu(tmp_path)
    out, metrics_path = tmp_path / "det", tmp_path / "detect.json"
    argv = [
        "detect", "--slices", str(tmp_path / "data/processed/slices.csv"),
        "--model", str(tmp_path / "no-such-model.ckpt"), "--root", str(tmp_path),
        "--nifti", str(tmp_path / "data/interim/nifti"), "--canvas", str(CANVAS),
        "--out", str(out), "--metrics", str(metrics_path), "--strategy", "hu_threshold",
        "--n_overlays", "0",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics["strategy"] == "hu_threshold" and metrics["forwards_total"] == 0
    scores = pd.read_csv(out / "scores.csv")
    bleeding = scores[scores["any"] == 1]
    assert len(bleeding) == 1 and bleeding["score_max"].iloc[0] > 0.5
    assert scores.loc[scores["any"] == 0, "score_max"].max() == 0
    data = np.asarray(nib.load(out / "ID_00000000bb.nii.gz").dataobj)
    assert not volume.slice_image(data, 1)[~brain_disc()].any()  # zero outside the brain


def test_hu_strategies_refuse_to_run_without_the_hu_volumes(tmp_path):
    write_dataset(tmp_path)
    argv = [
        "detect", "--slices", str(tmp_path / "data/processed/slices.csv"), "--root", str(tmp_path),
        "--nifti", "", "--out", str(tmp_path / "det"), "--metrics", str(tmp_path / "m.json"),
        "--strategy", "hu_threshold",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="HU volumes"):
        cli.main(argv)


def test_false_positives_are_attributed_to_what_they_lie_on():
    brain = np.zeros((20, 20), bool)
    brain[2:18, 2:18] = True
    mimic = np.zeros((20, 20), np.uint8)
    mimic[8:12, 8:10] = MIMIC_CODES["pineal"]
    mimic[2:4, 9:11] = MIMIC_CODES["venous_sinus"]  # the superior sagittal sinus, on the rim
    labels = np.zeros((20, 20), np.int32)
    labels[8:12, 8:11] = 1  # 8 of 12 pixels on the pineal
    labels[2:4, 8:12] = 2  # on the rim and half on the sinus: the sinus wins
    labels[14:17, 2:4] = 3  # on the rim, no mimic
    labels[6:8, 12:14] = 4  # deep, nothing there
    labels[10:11, 12:13] = 5  # touches nothing but lies next to the pineal component
    kinds = attribute_components(labels, brain, mimic, rim_px=2)
    assert kinds == ["pineal", "venous_sinus", "rim", "other", "other"]
    assert attribute_components(labels, brain, None, rim_px=2)[:2] == ["other", "rim"]
    assert set(kinds) <= set(FP_KINDS)
    assert rim_band(brain, 2).sum() == 16 * 16 - 12 * 12


def test_component_score_ranks_detected_slices_above_the_rest():
    from ichinpaint.scores import component_score

    anomaly = np.zeros((8, 8))
    anomaly[2:4, 2:4] = 0.5  # mass 2.0
    anomaly[6, 6] = 3.0  # a brighter single pixel that did not survive post-processing
    labels = np.zeros((8, 8), np.int32)
    labels[2:4, 2:4] = 1
    detected = component_score(anomaly, labels, top1pct=0.1)
    assert detected == pytest.approx(3.0)  # 1 + the component's mass
    quiet = component_score(anomaly, np.zeros_like(labels), top1pct=50.0)
    louder = component_score(anomaly, np.zeros_like(labels), top1pct=100.0)
    assert quiet < louder < 1.0 < detected  # no detection ranks below any detection
