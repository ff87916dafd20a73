"""The slice manifest's owner: one parser of ``use``, one column list, one PNG reader."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ichinpaint import manifest
from ichinpaint.constants import LABELS


def test_use_accepts_what_a_csv_round_trip_gives_and_refuses_the_rest(tmp_path):
    assert manifest.parse_use(pd.Series([True, False]), "x").tolist() == [True, False]
    parsed = manifest.parse_use(pd.Series(["True", " false", "1", "0", "TRUE"]), "x")
    assert parsed.tolist() == [True, False, True, False, True]
    for bad in (["yes"], [None], ["maybe"], [2]):
        with pytest.raises(ValueError, match=r"m\.csv: column use"):
            manifest.parse_use(pd.Series(bad, dtype=object), tmp_path / "m.csv")


def test_read_names_missing_columns_and_keeps_ids_as_strings(tmp_path):
    row = {column: 0 for column in manifest.COLUMNS} | {"image_id": "0012", "use": "True"}
    row |= {"split": "val"}
    path = tmp_path / "slices.csv"
    pd.DataFrame([row, row | {"split": "train", "use": False}]).to_csv(path, index=False)
    frame = manifest.read(path)
    assert frame["image_id"].tolist() == ["0012", "0012"]
    assert frame["use"].tolist() == [True, False]
    assert len(manifest.read(path, splits=["val"])) == 1
    assert all(frame[label].dtype.kind == "i" for label in LABELS)
    pd.DataFrame([row]).drop(columns=["mask_path"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"slices\.csv: missing columns \['mask_path'\]"):
        manifest.read(path, manifest.FOR_EVALUATION)
    assert len(manifest.read(path, ["image_id", "use"])) == 1
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        manifest.read(tmp_path / "nope.csv")


def test_incomplete_series_is_refused(tmp_path):
    frame = pd.DataFrame({"series_uid": ["S"] * 2, "slice_index": [0, 2], "n_slices": [3, 3]})
    with pytest.raises(ValueError, match="series S lists slice indices"):
        manifest.check_complete_series(frame, tmp_path / "m.csv")
    manifest.check_complete_series(frame.assign(slice_index=[0, 1], n_slices=2), "m.csv")


def test_png_reader_checks_mode_and_shape(tmp_path):
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(image, mode="L").save(tmp_path / "a.png")
    assert np.array_equal(manifest.read_png(tmp_path / "a.png", 8), image)
    assert manifest.read_mask(tmp_path / "a.png").sum() == 0  # all values <= 127
    with pytest.raises(ValueError, match=r"a\.png: shape \(8, 8\)"):
        manifest.read_png(tmp_path / "a.png", 16)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png: expected an 8-bit grayscale PNG"):
        manifest.read_png(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        manifest.read_png(tmp_path / "gone.png")
