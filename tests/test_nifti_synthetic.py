"""filter + nifti on a tiny synthetic dataset: every quirk file converted right or excluded.

The generator (`ichinpaint.synthetic`) records its quirks in ``ground_truth/quirks.csv``
and its slice grids in ``ground_truth/<series>/``. Here the stages' output is held
against that record: excluded images are exactly the ones the generator broke, each
volume sits on the ground-truth grid with the ground-truth slice order, and its HU are
what the generator's own decoder gives for the stored values (with the RSNA fix
exactly where quirks.csv says the 12-bit encoding was used).
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from ichinpaint import cli, io, synthetic, volume
from ichinpaint.synthetic import dicom as synthetic_dicom


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    counts = synthetic.write_dataset(raw, n_patients=6, n_slices=5, matrix=64, seed=1, sheet=False)
    out = tmp_path_factory.mktemp("out")
    common = ["--raw_dir", str(raw), "--n_jobs", "1"]
    cli.main(
        ["filter", *common, "--out", str(out / "slices.csv"), "--metrics", str(out / "filter.json")]
    )
    cli.main(
        ["nifti", *common, "--slices", str(out / "slices.csv"), "--out", str(out / "nifti"),
         "--metrics", str(out / "nifti.json")]
    )  # fmt: skip
    slices = pd.read_csv(out / "slices.csv")
    slices[["split", "reason"]] = slices[["split", "reason"]].fillna("")
    return {
        "raw": raw,
        "counts": counts,
        "slices": slices,
        "nifti": out / "nifti",
        "filter_metrics": io.read_json(out / "filter.json"),
        "nifti_metrics": io.read_json(out / "nifti.json"),
        "quirks": pd.read_csv(raw / "ground_truth" / "quirks.csv"),
        "series": pd.read_csv(raw / "ground_truth" / "series.csv"),
    }


def test_only_the_broken_file_is_excluded(pipeline):
    slices, quirks, metrics = pipeline["slices"], pipeline["quirks"], pipeline["filter_metrics"]
    assert len(slices) == pipeline["counts"]["images"] == metrics["images_total"]
    truncated = set(quirks.loc[quirks["quirk"] == "truncated_pixel_data", "image_id"])
    assert len(truncated) == 1
    excluded = slices.loc[slices["status"] == "excluded"].set_index("image_id")["reason"]
    assert excluded.to_dict() == dict.fromkeys(truncated, "corrupt_pixel_data")
    n_duplicated = int((quirks["quirk"] == "duplicate_csv_rows").sum())
    assert n_duplicated == 4 and metrics["csv_duplicate_rows_dropped"] == 6 * n_duplicated
    assert metrics["labels_any_mismatch"] == 0


def test_every_series_lands_on_the_ground_truth_grid(pipeline):
    nifti_dir, raw = pipeline["nifti"], pipeline["raw"]
    assert pipeline["nifti_metrics"]["series_refused"] == 0
    for row in pipeline["series"].itertuples():
        meta = io.read_json(nifti_dir / f"{row.series_uid}.json")
        truth = raw / "ground_truth" / row.series_uid
        assert meta["image_ids"] == io.read_json(truth / "ids.json")["image_ids"]
        ours = nib.load(nifti_dir / f"{row.series_uid}.nii.gz")
        lesion = nib.load(truth / "lesion.nii.gz")
        assert ours.shape == lesion.shape
        np.testing.assert_allclose(ours.affine, lesion.affine, atol=1e-3)
        brain = np.asanyarray(nib.load(truth / "brain.nii.gz").dataobj) > 0
        brain_hu = np.asanyarray(ours.dataobj)[brain]
        assert 10 < brain_hu.mean() < 60, f"{row.series_uid}: brain at {brain_hu.mean():.0f} HU"


def test_quirk_series_keep_their_tilt_matrix_and_12bit_fix(pipeline):
    quirks, nifti_dir = pipeline["quirks"], pipeline["nifti"]
    for quirk in ("gantry_tilt", "non_default_matrix", "rsna12_encoding", "multivalue_window"):
        (series_uid,) = quirks.loc[quirks["quirk"] == quirk, "series_uid"].unique()
        meta = io.read_json(nifti_dir / f"{series_uid}.json")
        expected = quirks.loc[quirks["quirk"] == quirk, "expected"].iloc[0]
        if quirk == "gantry_tilt":
            degrees = float(re.search(r"([\d.]+) degrees", expected).group(1))
            assert meta["gantry_tilt_deg"] == pytest.approx(degrees, abs=0.05)
        if quirk == "non_default_matrix":
            rows, cols = (int(v) for v in re.search(r"(\d+) x (\d+)", expected).groups())
            assert meta["shape"][:2] == [cols, rows]  # data[col, row, k]
        assert meta["n_12bit_fixed"] == (
            len(meta["image_ids"]) if quirk == "rsna12_encoding" else 0
        )


def test_hu_equal_the_generators_decoding(pipeline):
    raw, nifti_dir, quirks = pipeline["raw"], pipeline["nifti"], pipeline["quirks"]
    needs_fix = set(quirks.loc[quirks["quirk"] == "rsna12_encoding", "image_id"])
    for path in sorted(nifti_dir.glob("*.nii.gz")):
        data = np.asanyarray(nib.load(path).dataobj)
        meta = io.read_json(path.with_name(path.name.replace(".nii.gz", ".json")))
        for k, image_id in enumerate(meta["image_ids"]):
            ds = pydicom.dcmread(raw / "stage_2_train" / f"{image_id}.dcm")
            intended = synthetic_dicom.decode_hu(
                ds.pixel_array,
                float(ds.RescaleIntercept),
                float(ds.RescaleSlope),
                rsna12_fix=image_id in needs_fix,
            )
            np.testing.assert_array_equal(volume.slice_image(data, k), np.rint(intended))
