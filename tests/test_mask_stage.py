"""The mask stage through the `ichinpaint` CLI on phantom volumes written as real NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_brainmask import SoftTissueProbability, phantom_head, script

from ichinpaint import cli


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)


@pytest.fixture
def two_series(tmp_path: Path) -> dict[str, Path]:
    """Two phantom series (one tilted); ground truth only for the first."""
    nifti, truth = tmp_path / "nifti", tmp_path / "ground_truth"
    for uid, tilt, seed in (("ID_00000000a1", 0.0, 1), ("ID_00000000b2", 15.0, 2)):
        hu, affine, tissues = phantom_head(tilt_deg=tilt, seed=seed)
        write_nifti(nifti / f"{uid}.nii.gz", hu, affine)
        (nifti / f"{uid}.json").write_text(json.dumps({"series_uid": uid}))
        if uid.endswith("a1"):
            write_nifti(
                truth / uid / "brain.nii.gz", tissues["intracranial"].astype(np.uint8), affine
            )
    return {
        "nifti": nifti,
        "truth": truth,
        "out": tmp_path / "masks",
        "metrics": tmp_path / "mask.json",
        "overlay": tmp_path / "overlay.png",
    }


def run_mask(paths: dict[str, Path], *extra: str, overlay: bool = False) -> None:
    cli.main(
        [
            "mask",
            "--nifti",
            str(paths["nifti"]),
            "--ground_truth",
            str(paths["truth"]),
            "--out",
            str(paths["out"]),
            "--metrics",
            str(paths["metrics"]),
            "--overlay",
            str(paths["overlay"]) if overlay else "",
            "--n_jobs",
            "1",
            *extra,
        ]
    )


def test_mask_stage_writes_uint8_masks_on_the_source_grid_and_dice(two_series):
    run_mask(two_series, overlay=True)
    for source in sorted(two_series["nifti"].glob("*.nii.gz")):
        mask = nib.load(two_series["out"] / source.name)
        hu = nib.load(source)
        assert mask.get_data_dtype() == np.uint8
        assert mask.shape == hu.shape
        np.testing.assert_allclose(mask.affine, hu.affine, atol=1e-5)
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
    metrics = json.loads(two_series["metrics"].read_text())
    assert metrics["method"] == "threshold"
    assert metrics["series"] == 2 and metrics["series_with_ground_truth"] == 1
    assert list(metrics["dice"]) == ["ID_00000000a1"]
    assert metrics["dice_mean"] >= 0.95 and metrics["dice_min"] == metrics["dice_mean"]
    assert not list(two_series["out"].parent.glob(".masks.*"))  # no temporary left behind
    assert Image.open(two_series["overlay"]).format == "PNG"


def test_mask_stage_without_ground_truth_reports_no_dice(two_series, tmp_path):
    two_series["truth"] = tmp_path / "absent"
    run_mask(two_series)
    metrics = json.loads(two_series["metrics"].read_text())
    assert metrics["series_with_ground_truth"] == 0 and "dice_mean" not in metrics


def test_mask_stage_names_a_broken_volume_and_writes_nothing(two_series):
    (two_series["nifti"] / "ID_00000000c3.nii.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(ValueError, match="ID_00000000c3.nii.gz"):
        run_mask(two_series)
    assert not two_series["out"].exists()


def test_mask_stage_refuses_ground_truth_on_another_grid(two_series):
    truth = two_series["truth"] / "ID_00000000a1" / "brain.nii.gz"
    write_nifti(truth, np.zeros((5, 5, 5), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="brain.nii.gz: shape"):
        run_mask(two_series)


def test_model_method_needs_a_model_path(two_series, capsys):
    with pytest.raises(SystemExit):  # checked before any work (PARAM rules of the stage)
        run_mask(two_series, "--method", "model")
    assert "--model_path" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mask_stage_runs_a_torchscript_model(two_series, tmp_path):
    path = script(SoftTissueProbability(), tmp_path / "soft.pt")
    run_mask(
        two_series,
        "--method",
        "model",
        "--model_path",
        path,
        "--model_size",
        "96",
        "--model_output",
        "probabilities",
    )
    metrics = json.loads(two_series["metrics"].read_text())
    assert metrics["method"] == "model" and metrics["series"] == 2
    # soft tissue includes the scalp, so the overlap is real but far from perfect
    assert 0.5 < metrics["dice_mean"] < 0.97
