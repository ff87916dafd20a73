"""The png stage through the `ichinpaint` CLI: PNG content and geometry, manifest, counts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_brainmask import phantom_head
from test_mask_stage import write_nifti

from ichinpaint import cli, volume
from ichinpaint.constants import LABELS
from ichinpaint.manifest import COLUMNS as MANIFEST_COLUMNS
from ichinpaint.windowing import brain_window, to_model_grid

CANVAS, IMG_SIZE = 128, 32


def image_ids(uid: str, n: int) -> list[str]:
    return [f"ID_{uid[-4:]}{k:05x}" for k in range(n)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A repository-like working directory with two series, their masks and slices.csv."""
    monkeypatch.chdir(tmp_path)
    series = {}
    rows = []
    for uid, patient, split, n in (
        ("ID_0000aa01", "ID_p1", "train", 10),
        ("ID_0000bb02", "ID_p2", "test", 7),
    ):
        hu, affine, tissues = phantom_head(cols=120, rows=100, n_slices=n, seed=n)
        ids = image_ids(uid, n)
        write_nifti(Path("data/interim/nifti") / f"{uid}.nii.gz", hu, affine)
        write_nifti(
            Path("masks") / f"{uid}.nii.gz", tissues["intracranial"].astype(np.uint8), affine
        )
        sidecar = {"series_uid": uid, "patient_id": patient, "split": split, "image_ids": ids}
        Path(f"data/interim/nifti/{uid}.json").write_text(json.dumps(sidecar))
        series[uid] = {"hu": hu, "brain": tissues["intracranial"], "ids": ids}
        for k, image_id in enumerate(ids):
            labels = dict.fromkeys(LABELS, 0)
            if split == "test" and k == 3:
                labels.update(subdural=1, any=1)
            rows.append({"image_id": image_id, "patient_id": patient, "series_uid": uid, **labels})
            rows[-1].update(split=split, status="kept", reason="")
    rows.append(
        {
            "image_id": "ID_lost",
            "patient_id": "ID_p9",
            "series_uid": "ID_x",
            **dict.fromkeys(LABELS, 0),
        }
    )
    rows[-1].update(split="train", status="excluded", reason="corrupt_pixel_data")
    pd.DataFrame(rows).to_csv("slices.csv", index=False)
    return series


def run_png(*extra: str) -> None:
    args = ["png", "--nifti", "data/interim/nifti", "--masks", "masks", "--slices", "slices.csv"]
    args += ["--out", "data/processed", "--metrics", "metrics/png.json", "--canvas", str(CANVAS)]
    cli.main([*args, "--img_size", str(IMG_SIZE), "--n_jobs", "1", *extra])


def test_png_stage_exports_every_slice_with_the_manifest(project):
    run_png("--midrange_min_fraction", "0.4")
    manifest = pd.read_csv(
        "data/processed/slices.csv", dtype={"drop_reason": str}, keep_default_na=False
    )
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 17
    for uid, s in project.items():
        rows = manifest[manifest["series_uid"] == uid].sort_values("slice_index")
        n = len(s["ids"])
        assert rows["image_id"].tolist() == s["ids"] and (rows["n_slices"] == n).all()
        # neighbours: above = k + 1, below = k - 1, edges are their own neighbour
        assert rows["above_id"].tolist() == s["ids"][1:] + s["ids"][-1:]
        assert rows["below_id"].tolist() == s["ids"][:1] + s["ids"][:-1]
        assert (
            rows["above_path"].tolist()
            == rows["image_path"].tolist()[1:] + rows["image_path"].tolist()[-1:]
        )
        for path in [*rows["image_path"], *rows["mask_path"]]:
            assert path.startswith(f"data/processed/png/{uid}/") and Path(path).is_file()
    bleed = manifest.set_index("image_id").loc["ID_bb0200003"]
    assert bleed["subdural"] == 1 and bleed["any"] == 1 and bleed["epidural"] == 0
    # the mid-range filter drops the small caps at the ends of the phantom (3 slices)
    dropped = manifest[~manifest["use"]]
    assert len(dropped) == 3 and (dropped["drop_reason"] == "midrange_below_min").all()
    assert (manifest.loc[manifest["use"], "drop_reason"] == "").all()
    assert (dropped["midrange_fraction"] < 0.4).all() and (
        manifest.loc[manifest["use"], "midrange_fraction"] >= 0.4
    ).all()
    metrics = json.loads(Path("metrics/png.json").read_text())
    assert metrics["slices_exported"] == 17 == metrics["slices_used"] + metrics["slices_dropped"]
    assert metrics["train_exported"] == 10 and metrics["test_exported"] == 7
    assert metrics["kept_images_not_exported"] == 0


def test_png_content_is_the_brain_window_on_the_model_grid(project):
    run_png()
    s = project["ID_0000aa01"]
    k = 5
    native = volume.slice_image(s["hu"], k)
    png = np.asarray(Image.open(f"data/processed/png/ID_0000aa01/{s['ids'][k]}.png"))
    assert png.dtype == np.uint8 and png.shape == (IMG_SIZE, IMG_SIZE)
    np.testing.assert_array_equal(png, to_model_grid(brain_window(native), CANVAS, IMG_SIZE))
    mask = np.asarray(Image.open(f"data/processed/png/ID_0000aa01/{s['ids'][k]}_mask.png"))
    assert set(np.unique(mask)) == {0, 255}
    expected = to_model_grid(
        volume.slice_image(s["brain"], k).astype(np.uint8), CANVAS, IMG_SIZE, mode="nearest"
    )
    np.testing.assert_array_equal(mask // 255, expected)


def test_png_orientation_follows_the_dicom_display_order(project):
    # A bright block in the top-left of slice 0 of the image ([row, col]) must land top-left.
    s = project["ID_0000aa01"]
    images = [volume.slice_image(s["hu"], k).copy() for k in range(s["hu"].shape[2])]
    images[0][:30, :20] = 80
    path = Path("data/interim/nifti/ID_0000aa01.nii.gz")
    write_nifti(path, volume.stack_slices(images).astype(np.int16), nib.load(path).affine)
    run_png()
    png = np.asarray(Image.open(f"data/processed/png/ID_0000aa01/{s['ids'][0]}.png"))
    # canvas 128 pads rows 100 -> 14 above, crops nothing; cols 120 -> 4 left; /4 on the grid
    assert png[4:10, 1:6].min() == 255
    assert png[-8:, -8:].max() == 0


def test_png_stage_refuses_images_without_labels(project):
    table = pd.read_csv("slices.csv")
    table[table["image_id"] != "ID_aa0100004"].to_csv("slices.csv", index=False)
    with pytest.raises(ValueError, match="ID_aa0100004"):
        run_png()
    assert not Path("data/processed").exists()


def test_png_stage_names_a_missing_mask(project):
    Path("masks/ID_0000bb02.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="ID_0000bb02.nii.gz"):
        run_png()


def test_png_stage_refuses_a_split_that_disagrees_with_the_sidecar(project):
    table = pd.read_csv("slices.csv")
    table.loc[table["image_id"] == "ID_bb0200001", "split"] = "train"
    table.to_csv("slices.csv", index=False)
    with pytest.raises(ValueError, match="split disagrees"):
        run_png()
