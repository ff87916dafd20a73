"""DICOM reading: headers and PixelData integrity, HU decoding, series stacking and refusals."""

from __future__ import annotations

import dicom_fixtures as fx
import numpy as np
import pydicom
import pytest

from ichinpaint import dicom, volume


def write_series(tmp_path, specs):
    return [fx.write_dicom(tmp_path / f"{s.image_id}.dcm", s) for s in specs]


def sorted_specs(specs):
    return sorted(specs, key=lambda s: volume.position_along_normal(s.ipp, s.iop))


@pytest.mark.parametrize("encoding", fx.ENCODINGS)
def test_decode_hu_recovers_the_intended_values(tmp_path, encoding):
    hu = fx.phantom_hu(12, 20, seed=3)
    spec = fx.series_specs(number=1, n_slices=1, encoding=encoding)[0]
    spec.hu = hu
    path = fx.write_dicom(tmp_path / "a.dcm", spec)
    ds = pydicom.dcmread(path)
    decoded = dicom.decode_hu(ds)
    assert decoded.dtype == np.int16 and decoded.shape == (12, 20)
    np.testing.assert_array_equal(decoded, hu)
    assert dicom.needs_rsna_12bit_fix(ds) == (encoding == "rsna12")


def test_rsna12_without_the_fix_would_be_wrong(tmp_path):
    # Guards the fixture: air stored as 3096 in a 12-bit file is not -1000 by plain rescale.
    spec = fx.series_specs(number=1, n_slices=1, encoding="rsna12")[0]
    ds = pydicom.dcmread(fx.write_dicom(tmp_path / "a.dcm", spec))
    plain = ds.pixel_array.astype(float) * 1 + float(ds.RescaleIntercept)
    assert plain.min() >= 0 and spec.hu.min() == -1000
    assert dicom.decode_hu(ds).min() == -1000


def test_decode_hu_refuses_to_clip_beyond_int16(tmp_path):
    spec = fx.series_specs(number=1, n_slices=1, encoding="signed")[0]
    ds = fx.make_dataset(spec)
    ds.RescaleSlope = "40"  # 1200 HU of skull -> 48000, beyond int16
    with pytest.raises(dicom.HUDecodeError, match="do not fit int16"):
        dicom.decode_hu(ds)


def header_of(tmp_path, ds, name="ID_0000000aa"):
    return dicom.read_header(fx.save_dataset(ds, tmp_path / f"{name}.dcm"))


def one_slice(encoding="unsigned"):
    return fx.make_dataset(fx.series_specs(number=3, n_slices=1, encoding=encoding)[0])


@pytest.mark.parametrize(
    "edit, detail",
    [
        (lambda ds: delattr(ds, "RescaleIntercept"), "RescaleIntercept missing"),
        (lambda ds: delattr(ds, "RescaleSlope"), "RescaleSlope missing"),
        (lambda ds: setattr(ds, "RescaleSlope", "NaN"), "RescaleSlope is nan"),
        (lambda ds: setattr(ds, "RescaleIntercept", "nan"), "RescaleIntercept is nan"),
        (lambda ds: setattr(ds, "RescaleIntercept", "1e9"), "outside the physical range"),
        (lambda ds: setattr(ds, "RescaleSlope", "0"), "must be positive"),
        (lambda ds: setattr(ds, "RescaleSlope", "-1"), "must be positive"),
    ],
)
def test_an_unusable_rescale_is_excluded_never_defaulted(tmp_path, edit, detail):
    ds = one_slice("unsigned")  # intercept -1024: a missing one read as 0 is 1024 HU off
    edit(ds)
    record = header_of(tmp_path, ds)
    assert record["reason"] == dicom.UNUSABLE_RESCALE
    assert detail in record["detail"]
    with pytest.raises(dicom.HUDecodeError) as info:
        dicom.decode_hu(ds)
    assert info.value.reason == dicom.UNUSABLE_RESCALE


@pytest.mark.parametrize("modality", ["MR", "CR", "US", "OT", ""])
def test_non_ct_images_are_excluded_and_never_get_the_12bit_fix(tmp_path, modality):
    ds = one_slice("rsna12")
    ds.Modality = modality
    if not modality:
        del ds.Modality
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    record = header_of(tmp_path, ds)
    assert record["reason"] == dicom.NOT_CT
    assert (modality or "missing") in record["detail"]
    assert not dicom.needs_rsna_12bit_fix(ds)
    with pytest.raises(dicom.HUDecodeError, match="not_ct"):
        dicom.decode_hu(ds)


def test_ct_sop_class_without_modality_is_accepted(tmp_path):
    ds = one_slice("signed")
    del ds.Modality
    assert header_of(tmp_path, ds)["reason"] == ""


def test_rows_smaller_than_the_pixel_data_is_a_geometry_mismatch(tmp_path):
    ds = one_slice("signed")  # 16 x 16
    ds.Rows = 8
    record = header_of(tmp_path, ds)
    assert record["reason"] == dicom.GEOMETRY_MISMATCH
    assert "512 bytes" in record["detail"] and "need 256" in record["detail"]


def test_hu_far_outside_the_physical_range_is_flagged_not_clipped():
    hu = fx.phantom_hu(16, 16, seed=1)
    assert dicom.hu_range_problem(hu) == ""
    padded = hu.copy()
    padded[0, :] = -3024  # constant padding outside the reconstruction circle
    assert dicom.hu_range_problem(padded) == ""
    hot = hu.copy()
    hot[5, 5] = 9000
    assert "above 4000 HU (max 9000)" in dicom.hu_range_problem(hot)
    cold = padded.copy()
    cold[6, 6] = -1500
    assert "below -1100 HU (min -3024)" in dicom.hu_range_problem(cold)


def test_hu_flags_reach_the_series_volume(tmp_path):
    specs = fx.series_specs(number=4, n_slices=3)
    specs[1].hu = specs[1].hu.copy()
    specs[1].hu[2, 2] = 12000
    vol = dicom.load_series(write_series(tmp_path, specs))
    assert list(vol.hu_flagged) == [specs[1].image_id]
    assert volume.slice_image(vol.data, [s.image_id for s in sorted_specs(specs)].index(
        specs[1].image_id))[2, 2] == 12000  # fmt: skip


def test_colour_and_multiframe_images_are_unsupported(tmp_path):
    ds = one_slice("signed")
    ds.NumberOfFrames = 2
    assert header_of(tmp_path, ds)["reason"] == dicom.UNSUPPORTED_IMAGE


def test_ybr_full_422_size_accounts_for_chroma_subsampling():
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 10, 8, 8, 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    assert dicom.expected_pixel_bytes(ds) == 10 * 8 * 2
    ds.PhotometricInterpretation = "RGB"
    assert dicom.expected_pixel_bytes(ds) == 10 * 8 * 3


def test_a_deflated_file_is_not_mistaken_for_a_truncated_one(tmp_path):
    ds = one_slice("unsigned")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    path = fx.save_dataset(ds, tmp_path / "ID_0000000ab.dcm")
    assert dicom.read_header(path)["reason"] == ""
    np.testing.assert_array_equal(dicom.decode_hu(pydicom.dcmread(path)), dicom.decode_hu(ds))


def test_a_directory_or_a_link_loop_named_like_a_dicom_file(tmp_path):
    (tmp_path / "ID_00000000d.dcm").mkdir()
    loop = tmp_path / "ID_00000000e.dcm"
    loop.symlink_to(loop)
    assert dicom.read_header(tmp_path / "ID_00000000d.dcm")["reason"] == dicom.NOT_A_FILE
    assert dicom.read_header(loop)["reason"] == dicom.NOT_A_FILE


def test_header_of_a_good_file_with_multivalue_windows(tmp_path):
    spec = fx.series_specs(number=5, n_slices=1, multivalue_window=True)[0]
    record = dicom.read_header(fx.write_dicom(tmp_path / f"{spec.image_id}.dcm", spec))
    assert record["reason"] == ""
    assert record["image_id"] == spec.image_id
    assert (record["patient_id"], record["series_uid"]) == (spec.patient_id, spec.series_uid)
    assert record["position"] == pytest.approx(spec.ipp[2])


@pytest.mark.parametrize("drop", [1, 300, 512])
def test_truncated_pixel_data_is_caught_from_the_header(tmp_path, drop):
    spec = fx.series_specs(number=5, n_slices=1)[0]  # 16x16 int16: 512 bytes of pixels
    path = fx.write_dicom(tmp_path / "a.dcm", spec)
    assert dicom.read_header(path)["reason"] == ""
    fx.truncate_file(path, drop)
    record = dicom.read_header(path)
    assert record["reason"] == dicom.CORRUPT_PIXEL_DATA
    assert f"{512 - drop} of 512" in record["detail"]


def test_pixel_data_shorter_than_the_header_promises(tmp_path):
    spec = fx.series_specs(number=5, n_slices=1)[0]
    ds = fx.make_dataset(spec)
    ds.PixelData = ds.PixelData[:256]
    path = fx.save_dataset(ds, tmp_path / "a.dcm")
    record = dicom.read_header(path)
    assert record["reason"] == dicom.CORRUPT_PIXEL_DATA
    assert "declares 256" in record["detail"]


def test_not_a_dicom_file_and_missing_fields(tmp_path):
    junk = tmp_path / "ID_junk.dcm"
    junk.write_bytes(b"this is not DICOM at all")
    assert dicom.read_header(junk)["reason"] == dicom.UNREADABLE_HEADER

    spec = fx.series_specs(number=5, n_slices=1)[0]
    ds = fx.make_dataset(spec)
    del ds.SeriesInstanceUID
    path = fx.save_dataset(ds, tmp_path / "b.dcm")
    record = dicom.read_header(path)
    assert record["reason"] == dicom.INCOMPLETE_HEADER
    assert "SeriesInstanceUID" in record["detail"]


def test_load_series_sorts_by_position_and_maps_voxels_to_ipp(tmp_path):
    specs = fx.series_specs(number=7, n_slices=5, matrix=(12, 20))  # non-square, scrambled order
    vol = dicom.load_series(write_series(tmp_path, specs))
    ordered = sorted_specs(specs)
    assert vol.data.shape == (20, 12, 5)  # data[col, row, k]
    assert vol.image_ids == [s.image_id for s in ordered]
    for k, spec in enumerate(ordered):
        np.testing.assert_array_equal(volume.slice_image(vol.data, k), spec.hu)
        ras = vol.affine @ np.array([0, 0, k, 1.0])
        np.testing.assert_allclose(ras[:3], [-spec.ipp[0], -spec.ipp[1], spec.ipp[2]], atol=1e-4)
    # (col, row) = (19, 11) lies at IPP + 19 * 0.5 x + 11 * 0.5 y in LPS.
    first = ordered[0].ipp
    ras = vol.affine @ np.array([19, 11, 0, 1.0])
    np.testing.assert_allclose(ras[:3], [-(first[0] + 9.5), -(first[1] + 5.5), first[2]], atol=1e-4)
    assert vol.gantry_tilt_deg == pytest.approx(0, abs=1e-6)
    assert vol.slice_spacing == pytest.approx(5.0)


def test_gantry_tilt_is_kept_in_the_affine(tmp_path):
    specs = fx.series_specs(number=8, n_slices=4, tilt_deg=20)
    vol = dicom.load_series(write_series(tmp_path, specs))
    assert vol.gantry_tilt_deg == pytest.approx(20, abs=1e-3)
    ordered = sorted_specs(specs)
    last = ordered[-1].ipp
    ras = vol.affine @ np.array([0, 0, 3, 1.0])
    np.testing.assert_allclose(ras[:3], [-last[0], -last[1], last[2]], atol=1e-4)
    assert vol.slice_spacing == pytest.approx(5.0 * np.cos(np.radians(20)), abs=1e-4)


def refusal(tmp_path, specs, **kwargs) -> dicom.SeriesRefused:
    with pytest.raises(dicom.SeriesRefused) as info:
        dicom.load_series(write_series(tmp_path, specs), **kwargs)
    return info.value


def test_refuses_a_single_slice(tmp_path):
    assert refusal(tmp_path, fx.series_specs(number=1, n_slices=1)).reason == "single_slice"


def test_refuses_mixed_matrix(tmp_path):
    specs = fx.series_specs(number=1, n_slices=3)
    specs[1].hu = fx.phantom_hu(16, 18, seed=0)
    assert refusal(tmp_path, specs).reason == "mixed_matrix"


def test_refuses_inconsistent_orientation(tmp_path):
    specs = fx.series_specs(number=1, n_slices=3)
    specs[2].iop = fx.tilted_iop(10)
    assert refusal(tmp_path, specs).reason == "inconsistent_orientation"


def test_refuses_duplicate_positions(tmp_path):
    specs = fx.series_specs(number=1, n_slices=3)
    specs[0].ipp = specs[1].ipp
    error = refusal(tmp_path, specs)
    assert error.reason == "duplicate_positions"
    assert specs[0].image_id in error.detail and specs[1].image_id in error.detail


def test_refuses_a_missing_slice_but_tolerance_is_a_parameter(tmp_path):
    specs = sorted_specs(fx.series_specs(number=1, n_slices=5))
    del specs[2]
    assert refusal(tmp_path / "a", specs).reason == "uneven_spacing"
    vol = dicom.load_series(write_series(tmp_path / "b", specs), spacing_tolerance=1.5)
    assert vol.data.shape[2] == 4


def test_refuses_a_slice_inside_the_stack_that_does_not_decode(tmp_path):
    specs = sorted_specs(fx.series_specs(number=1, n_slices=3))
    paths = write_series(tmp_path, specs)
    fx.truncate_file(paths[1], 100)  # the middle slice: a gap only a guess could fill
    with pytest.raises(dicom.SeriesRefused) as info:
        dicom.load_series(paths)
    assert info.value.reason == "decode_failed"
    assert paths[1].name in info.value.detail and "inside the stack" in info.value.detail


def test_an_edge_slice_that_does_not_decode_is_dropped_and_recorded(tmp_path):
    specs = sorted_specs(fx.series_specs(number=2, n_slices=4))
    paths = write_series(tmp_path, specs)
    fx.truncate_file(paths[3], 100)  # the top slice
    vol = dicom.load_series(paths)
    assert vol.image_ids == [s.image_id for s in specs[:3]]
    assert list(vol.dropped) == [specs[3].image_id] and vol.data.shape[2] == 3
    assert vol.slice_spacing == pytest.approx(5.0)
    for k in range(3):
        np.testing.assert_array_equal(volume.slice_image(vol.data, k), specs[k].hu)
