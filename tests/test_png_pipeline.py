"""synthesize -> filter -> nifti -> mask -> png on a tiny synthetic set, through the CLI.

Checks what only the chain can show: masks agree with the synthetic ground truth, every
kept image reaches the manifest with its labels, and the PNGs sit on the same grid
and orientation as the ground truth brought to the model grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ichinpaint import cli, volume
from ichinpaint.constants import LABELS
from ichinpaint.preprocess.brainmask import dice
from ichinpaint.windowing import to_model_grid

CANVAS, IMG_SIZE = 64, 32


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    raw, interim = root / "raw", root / "interim"
    common = ["--n_jobs", "1"]
    cli.main(
        ["synthesize", "--n_patients", "4", "--n_slices", "5", "--matrix", str(CANVAS)]
        + ["--hemorrhage_fraction", "0.25", "--seed", "3", "--out", str(raw), *common]
    )
    cli.main(
        ["filter", "--raw_dir", str(raw), "--out", str(interim / "slices.csv")]
        + ["--metrics", str(root / "filter.json"), "--val_fraction", "0.3"]
        + ["--test_healthy_fraction", "0.3", *common]
    )
    cli.main(
        ["nifti", "--raw_dir", str(raw), "--slices", str(interim / "slices.csv")]
        + ["--out", str(interim / "nifti"), "--metrics", str(root / "nifti.json"), *common]
    )
    cli.main(
        ["mask", "--nifti", str(interim / "nifti"), "--ground_truth", str(raw / "ground_truth")]
        + ["--out", str(interim / "brainmask"), "--metrics", str(root / "mask.json")]
        + ["--overlay", str(root / "mask_overlay.png"), *common]
    )
    cli.main(
        ["png", "--nifti", str(interim / "nifti"), "--masks", str(interim / "brainmask")]
        + ["--slices", str(interim / "slices.csv"), "--out", str(root / "processed")]
        + ["--metrics", str(root / "png.json"), "--canvas", str(CANVAS)]
        + ["--img_size", str(IMG_SIZE), *common]
    )
    return root


def test_masks_match_the_synthetic_ground_truth(pipeline):
    metrics = json.loads((pipeline / "mask.json").read_text())
    assert metrics["series"] == metrics["series_with_ground_truth"] > 0
    assert metrics["dice_mean"] >= 0.95


def test_every_kept_image_of_a_written_series_is_exported_with_its_labels(pipeline):
    filtered = pd.read_csv(pipeline / "interim" / "slices.csv").set_index("image_id")
    manifest = pd.read_csv(pipeline / "processed" / "slices.csv").set_index("image_id")
    written = {p.name[: -len(".nii.gz")] for p in (pipeline / "interim" / "nifti").glob("*.nii.gz")}
    kept = filtered[(filtered["status"] == "kept") & filtered["series_uid"].isin(written)]
    assert sorted(kept.index) == sorted(manifest.index)
    for label in LABELS:
        np.testing.assert_array_equal(manifest.loc[kept.index, label], kept[label])
    assert (manifest.loc[kept.index, "split"] == kept["split"]).all()
    assert json.loads((pipeline / "png.json").read_text())["kept_images_not_exported"] == 0


def test_png_masks_line_up_with_the_ground_truth_brain(pipeline):
    manifest = pd.read_csv(pipeline / "processed" / "slices.csv")
    for uid, rows in manifest.groupby("series_uid"):
        truth = nib.load(pipeline / "raw" / "ground_truth" / uid / "brain.nii.gz").get_fdata() > 0
        ids = json.loads((pipeline / "raw" / "ground_truth" / uid / "ids.json").read_text())
        for _, row in rows.iterrows():
            k = ids["image_ids"].index(row["image_id"])
            assert k == row["slice_index"]
            expected = to_model_grid(
                volume.slice_image(truth, k).astype(float), CANVAS, IMG_SIZE, mode="area"
            )
            png_mask = np.asarray(Image.open(row["mask_path"])) > 127
            if expected.sum() > 20:
                assert dice(png_mask, expected > 0.5) > 0.9, (uid, k)
