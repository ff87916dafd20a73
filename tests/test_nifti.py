"""The nifti stage: HU volumes, sidecars, refusals, and a cross-check against dcm2niix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dicom_fixtures as fx
import nibabel as nib
import numpy as np
import pytest

from ichinpaint import cli, dicom, io, volume
from ichinpaint.preprocess import filter as slice_filter
from ichinpaint.preprocess import nifti as nifti_stage


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The quirky dataset through filter and nifti; returns (dataset, nifti dir, metrics)."""
    quirky = fx.write_quirky_dataset(tmp_path_factory.mktemp("raw"))
    out = tmp_path_factory.mktemp("out")
    table, _ = slice_filter.build_slice_table(
        quirky.root, val_fraction=0.15, test_healthy_fraction=0.15, fraction=1, seed=0, n_jobs=1
    )
    io.write_csv(out / "slices.csv", table[slice_filter.COLUMNS])
    cli.main(
        ["nifti", "--raw_dir", str(quirky.root), "--slices", str(out / "slices.csv"),
         "--out", str(out / "nifti"), "--metrics", str(out / "nifti.json"), "--n_jobs", "1"]
    )  # fmt: skip
    return quirky, out / "nifti", io.read_json(out / "nifti.json"), table


def kept_specs_by_series(quirky: fx.QuirkyDataset) -> dict[str, list[fx.SliceSpec]]:
    series: dict[str, list[fx.SliceSpec]] = {}
    for spec in quirky.specs:
        if spec.image_id not in quirky.expected_reason:
            series.setdefault(spec.series_uid, []).append(spec)
    return {
        uid: sorted(specs, key=lambda s: volume.position_along_normal(s.ipp, s.iop))
        for uid, specs in series.items()
    }


def test_every_written_volume_holds_the_intended_hu(converted):
    quirky, nifti_dir, metrics, _ = converted
    expected = kept_specs_by_series(quirky)
    written = sorted(p.name.removesuffix(".nii.gz") for p in nifti_dir.glob("*.nii.gz"))
    assert written == sorted(set(expected) - set(quirky.refused_series))
    for uid in written:
        image = nib.load(nifti_dir / f"{uid}.nii.gz")
        assert image.get_data_dtype() == np.int16
        data = np.asanyarray(image.dataobj)
        specs = expected[uid]
        assert data.shape[2] == len(specs)
        for k, spec in enumerate(specs):
            np.testing.assert_array_equal(volume.slice_image(data, k), spec.hu)
            ras = image.affine @ np.array([0, 0, k, 1.0])
            np.testing.assert_allclose(
                ras[:3], [-spec.ipp[0], -spec.ipp[1], spec.ipp[2]], atol=1e-3
            )


def test_sidecars_map_slices_back_to_rsna_ids(converted):
    quirky, nifti_dir, _, table = converted
    expected = kept_specs_by_series(quirky)
    splits = table.drop_duplicates("series_uid").set_index("series_uid")["split"]
    tilted = expected[fx.hex_id("ID_", 0x200000 + 10, 10)]
    for path in nifti_dir.glob("*.json"):
        meta = json.loads(path.read_text())
        specs = expected[meta["series_uid"]]
        assert meta["image_ids"] == [s.image_id for s in specs]
        assert meta["patient_id"] == specs[0].patient_id and meta["study_uid"] == specs[0].study_uid
        assert meta["split"] == splits[meta["series_uid"]]
        assert meta["shape"][2] == len(specs) and meta["pixel_spacing"] == [0.5, 0.5]
        assert np.all(np.diff(meta["positions"]) > 0)
        tilt = 18 if specs is tilted else 0
        assert meta["gantry_tilt_deg"] == pytest.approx(tilt, abs=1e-3)
        assert meta["slice_spacing"] == pytest.approx(5 * np.cos(np.radians(tilt)), abs=1e-3)
        assert meta["n_12bit_fixed"] == (len(specs) if specs[0].encoding == "rsna12" else 0)


def test_refusals_are_reported_and_counts_reconcile(converted):
    quirky, nifti_dir, metrics, table = converted
    assert metrics["images_kept"] == int((table["status"] == "kept").sum())
    assert metrics["images_kept"] == (
        metrics["images_written"] + metrics["images_dropped"] + metrics["images_refused"]
    )
    assert metrics["series_refused"] == len(quirky.refused_series)
    for uid, reason in quirky.refused_series.items():
        assert metrics[f"refused_{reason}"] == 1
        assert metrics["refused"][reason] == [uid]
    assert metrics["series_tilted"] == 1 and metrics["slices_12bit_fixed"] == 4
    manifest = nifti_dir / "series.csv"
    text = manifest.read_text()
    for uid, reason in quirky.refused_series.items():
        assert f"{uid}," in text and reason in text


def dcm2niix_binary() -> str:
    found = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    if not Path(found).exists():
        pytest.fail("dcm2niix is a dev dependency (pip package dcm2niix) and must be installed")
    return found


def convert_both(tmp_path: Path, specs: list[fx.SliceSpec]):
    paths = [fx.write_dicom(tmp_path / "in" / f"{s.image_id}.dcm", s) for s in specs]
    (tmp_path / "out").mkdir()
    subprocess.run(
        [dcm2niix_binary(), "-z", "y", "-b", "n", "-i", "n", "-f", "%j", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    # With a tilt dcm2niix may add a resampled `*_Tilt_1` file; the plain one is not resampled.
    (theirs_path,) = [p for p in (tmp_path / "out").glob("*.nii.gz") if "_Tilt_" not in p.name]
    ours_path = tmp_path / "ours.nii.gz"
    nib.save(nifti_stage.nifti_image(dicom.load_series(paths)), ours_path)
    ours = nib.as_closest_canonical(nib.load(ours_path))
    theirs_file = nib.load(theirs_path)
    theirs = nib.as_closest_canonical(theirs_file)
    theirs_data = np.asanyarray(theirs.dataobj)
    if specs[0].encoding == "rsna12":
        # dcm2niix does not know the RSNA fix: undo its rescale and apply the fix to the
        # stored values it read, which must then give our HU.
        slope, inter = theirs_file.dataobj.slope, theirs_file.dataobj.inter
        assert inter == 1  # the fixture's RescaleIntercept: dcm2niix applied plain rescaling
        x = np.rint((theirs_data - inter) / slope).astype(np.int32) + 1000
        x[x >= 4096] -= 4096
        theirs_data = x - 1000
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), theirs_data)
    return ours.affine, theirs.affine


@pytest.mark.parametrize("encoding", ["signed", "unsigned", "rsna12"])
def test_same_voxels_and_affine_as_dcm2niix(tmp_path, encoding):
    specs = fx.series_specs(number=30, n_slices=4, matrix=(12, 20), encoding=encoding)
    ours, theirs = convert_both(tmp_path, specs)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_tilted_series_matches_dcm2niix_except_the_slice_axis(tmp_path):
    """dcm2niix (without 0018,1120) keeps the tilted voxels in its plain output but writes
    an orthogonal slice axis (its choice varies with file order); ours is the real IPP
    step, i.e. the shear, as the contract says."""
    specs = fx.series_specs(number=31, n_slices=4, matrix=(12, 20), tilt_deg=15)
    ours, theirs = convert_both(tmp_path, specs)
    np.testing.assert_allclose(ours[:, [0, 1, 3]], theirs[:, [0, 1, 3]], atol=1e-4)
    np.testing.assert_allclose(ours[:3, 2], [0, 0, 5], atol=1e-4)  # LPS step (0, 0, 5) in RAS
