"""The synthetic RSNA-style dataset: layout, labels, DICOM tags, quirks, geometry, determinism.

One tiny dataset (4 patients x 5 slices x 96 px, all quirks) is written once per module;
the determinism test writes two more.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from ichinpaint import volume
from ichinpaint.constants import LABELS, SUBTYPE_CODES, SUBTYPES
from ichinpaint.stages import synthesize
from ichinpaint.synthetic import QUIRKS, dataset, dicom, write_dataset
from ichinpaint.synthetic.plan import plan_dataset

TINY = dict(n_patients=4, n_slices=5, matrix=96, hemorrhage_fraction=0.5, seed=3)
RSNA_TAGS = (
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
)
ABSENT_TAGS = ("SliceThickness", "SliceLocation", "InstanceNumber")


@pytest.fixture(autouse=True)
def _quiet_uid_warnings():
    # RSNA identifiers ("ID_...") are not numeric UIDs; pydicom warns on every read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    write_dataset(out, **TINY)
    return out


def _headers(root: Path) -> dict[str, pydicom.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {
            p.stem: pydicom.dcmread(p, stop_before_pixels=True)
            for p in sorted((root / "stage_2_train").glob("*.dcm"))
        }


def _quirks(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "ground_truth" / "quirks.csv")


def _labels(root: Path) -> dict[str, list[int]]:
    table = pd.read_csv(root / "stage_2_train.csv").drop_duplicates()
    image = table["ID"].str.rsplit("_", n=1).str[0]
    subtype = table["ID"].str.rsplit("_", n=1).str[1]
    wide = table.assign(image=image, subtype=subtype).pivot(
        index="image", columns="subtype", values="Label"
    )
    return {i: [int(v) for v in row] for i, row in wide[list(LABELS)].iterrows()}


def test_csv_has_six_rows_per_image_in_rsna_order_and_any_is_the_or(tiny):
    table = pd.read_csv(tiny / "stage_2_train.csv")
    assert list(table.columns) == ["ID", "Label"]
    assert len(table) % 6 == 0
    assert set(table["Label"]) <= {0, 1}
    for start in range(0, len(table), 6):
        block = table.iloc[start : start + 6]
        ids = block["ID"].str.rsplit("_", n=1)
        images = {i[0] for i in ids}
        assert len(images) == 1, f"block at row {start} mixes images: {images}"
        assert [i[1] for i in ids] == list(LABELS)
        assert re.fullmatch(r"ID_[0-9a-f]{9}", images.pop())
        labels = block["Label"].tolist()
        assert labels[5] == int(any(labels[:5]))
    files = {p.stem for p in (tiny / "stage_2_train").glob("*.dcm")}
    assert set(_labels(tiny)) == files
    assert len(files) == TINY["n_patients"] * TINY["n_slices"]
    assert any(v[5] for v in _labels(tiny).values()), "no hemorrhage at all"


def test_exactly_four_images_are_listed_twice_with_identical_rows(tiny):
    table = pd.read_csv(tiny / "stage_2_train.csv")
    counts = table["ID"].value_counts()
    twice = sorted({i.rsplit("_", 1)[0] for i in counts[counts == 2].index})
    assert counts.max() == 2
    assert len(twice) == 4
    for image_id in twice:
        rows = table[table["ID"].str.startswith(image_id + "_")]
        assert len(rows) == 12
        assert rows.duplicated().sum() == 6  # the second block repeats the first exactly
    listed = _quirks(tiny).query("quirk == 'duplicate_csv_rows'")["image_id"]
    assert sorted(listed) == twice


def test_every_file_is_dicom_with_the_rsna_tags_only(tiny):
    for image_id, ds in _headers(tiny).items():
        for tag in RSNA_TAGS:
            assert tag in ds, f"{image_id}: {tag} missing"
        for tag in ABSENT_TAGS:
            assert tag not in ds, f"{image_id}: {tag} must be absent as in RSNA"
        assert ds.SOPInstanceUID == image_id
        assert ds.file_meta.MediaStorageSOPInstanceUID == image_id
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and ds.HighBit == ds.BitsStored - 1
        assert float(ds.RescaleSlope) == 1.0
        assert re.fullmatch(r"ID_[0-9a-f]{10}", ds.SeriesInstanceUID)
        assert re.fullmatch(r"ID_[0-9a-f]{8}", ds.PatientID)
    # One series per study and per patient.
    series = {
        (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in _headers(tiny).values()
    }
    assert len(series) == len({s[0] for s in series}) == TINY["n_patients"]


def test_each_quirk_is_present_and_looks_like_the_real_one(tiny):
    quirks = _quirks(tiny)
    assert set(quirks["quirk"]) == set(QUIRKS)
    headers = _headers(tiny)
    for image_id in quirks.query("quirk == 'multivalue_window'")["image_id"]:
        assert isinstance(headers[image_id].WindowCenter, pydicom.multival.MultiValue)
        assert len(headers[image_id].WindowWidth) == 2
    single = set(headers) - set(quirks.query("quirk == 'multivalue_window'")["image_id"])
    assert all(not isinstance(headers[i].WindowCenter, pydicom.multival.MultiValue) for i in single)
    for image_id in quirks.query("quirk == 'rsna12_encoding'")["image_id"]:
        ds = headers[image_id]
        assert (ds.BitsStored, ds.PixelRepresentation) == (12, 0)
        assert float(ds.RescaleIntercept) > -100
    for image_id in quirks.query("quirk == 'non_default_matrix'")["image_id"]:
        assert (headers[image_id].Rows, headers[image_id].Columns) != (96, 96)
    tilted = quirks.query("quirk == 'gantry_tilt'")["image_id"]
    ds = [headers[i] for i in tilted]
    positions = np.array(
        sorted((list(map(float, d.ImagePositionPatient)) for d in ds), key=lambda p: p[2])
    )
    step = volume.mean_slice_step(positions)
    assert 10 <= volume.gantry_tilt_deg(ds[0].ImageOrientationPatient, step) <= 20
    assert np.allclose(step[:2], 0)  # the table moves along z only
    assert (quirks["quirk"] == "truncated_pixel_data").sum() == 1


def test_hu_decode_to_the_intended_values_and_naive_12_bit_decoding_does_not(tiny):
    plan = plan_dataset(**TINY)
    by_series = {p.series_uid: p for p in plan.series}
    quirky = _quirks(tiny)
    series_uids = set(quirky.query("quirk != 'duplicate_csv_rows'")["series_uid"])
    checked = {"rsna12": 0, "other": 0}
    for uid in sorted(series_uids):
        p = by_series[uid]
        rendered = dataset.render_plan(p)
        for k, image_id in enumerate(p.image_ids):
            if k == p.truncated_k:
                continue
            ds = pydicom.dcmread(tiny / "stage_2_train" / f"{image_id}.dcm")
            fix = p.encoding == "rsna12"
            hu = dicom.decode_hu(
                ds.pixel_array, float(ds.RescaleIntercept), float(ds.RescaleSlope), fix
            )
            intended = dicom.intended_hu(rendered.hu[k], p.encoding, dataset.outside_fov(p))
            np.testing.assert_array_equal(hu, intended)
            assert intended.min() <= -900  # air is in every slice
            if fix:
                naive = dicom.decode_hu(ds.pixel_array, float(ds.RescaleIntercept), 1.0, False)
                assert np.abs(naive - intended).max() > 1000
                checked["rsna12"] += 1
            else:
                checked["other"] += 1
    assert checked["rsna12"] >= 4 and checked["other"] >= 4


@pytest.mark.parametrize("encoding", dicom.ENCODINGS)
def test_each_encoding_round_trips_through_a_dicom_file(tmp_path, encoding):
    hu = np.linspace(-1100, 2500, 12 * 10).reshape(12, 10)
    outside = np.zeros_like(hu, bool)
    outside[0, 0] = True
    stored, intercept = dicom.encode_hu(hu, encoding, outside)
    header = dicom.SliceHeader(
        "ID_0000000aa", "ID_0000000b", "ID_000000000c", "ID_000000000d",
        (-100.0, -90.0, 12.5), (1, 0, 0, 0, 1, 0), (0.5, 0.5), 40, 80, encoding,
    )  # fmt: skip
    dicom.write_slice(tmp_path / "x.dcm", header, stored, intercept)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    back = dicom.decode_hu(ds.pixel_array, float(ds.RescaleIntercept), 1.0, encoding == "rsna12")
    np.testing.assert_array_equal(back, dicom.intended_hu(hu, encoding, outside))
    inside = ~outside & (hu >= -1000) & (hu <= 3000)
    assert np.abs(back[inside] - hu[inside]).max() <= 0.5


def test_truncated_file_keeps_its_header_and_csv_rows_but_cannot_be_decoded(tiny):
    row = _quirks(tiny).query("quirk == 'truncated_pixel_data'").iloc[0]
    path = tiny / "stage_2_train" / f"{row.image_id}.dcm"
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.SeriesInstanceUID == row.series_uid
    with pytest.raises(Exception):  # noqa: B017  (pydicom raises ValueError or EOFError)
        pydicom.dcmread(path).pixel_array  # noqa: B018
    assert row.image_id in _labels(tiny)
    ids = (tiny / "ground_truth" / row.series_uid / "ids.json").read_text()
    assert row.image_id not in ids
    # Every other file decodes.
    for p in (tiny / "stage_2_train").glob("*.dcm"):
        if p != path:
            assert pydicom.dcmread(p).pixel_array.ndim == 2


def _series_slices(root: Path, series_uid: str) -> list[tuple[float, str, pydicom.Dataset]]:
    """Readable slices of a series sorted along the normal, as the nifti stage does it."""
    truncated = set(_quirks(root).query("quirk == 'truncated_pixel_data'")["image_id"])
    out = []
    for image_id, ds in _headers(root).items():
        if ds.SeriesInstanceUID == series_uid and image_id not in truncated:
            pos = volume.position_along_normal(ds.ImagePositionPatient, ds.ImageOrientationPatient)
            out.append((pos, image_id, ds))
    return sorted(out, key=lambda t: t[0])


def _decoded(root: Path, image_id: str, ds: pydicom.Dataset) -> np.ndarray:
    full = pydicom.dcmread(root / "stage_2_train" / f"{image_id}.dcm")
    fix = ds.BitsStored == 12 and ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) > -100
    return dicom.decode_hu(
        full.pixel_array, float(ds.RescaleIntercept), float(ds.RescaleSlope), fix
    )


def test_ground_truth_lies_on_the_grid_the_dicom_headers_define(tiny):
    series = pd.read_csv(tiny / "ground_truth" / "series.csv")
    assert {"series_uid", "patient_id", "n_slices", "has_hemorrhage", "quirks"} <= set(
        series.columns
    )
    blood, brain_hu = [], []
    for row in series.itertuples():
        slices = _series_slices(tiny, row.series_uid)
        folder = tiny / "ground_truth" / row.series_uid
        ids = pd.read_json(folder / "ids.json", typ="series")["image_ids"]
        assert list(ids) == [s[1] for s in slices]
        assert row.n_slices == len(slices)
        lesion = nib.load(folder / "lesion.nii.gz")
        brain = nib.load(folder / "brain.nii.gz")
        ipps = np.array([np.asarray(s[2].ImagePositionPatient, float) for s in slices])
        first = slices[0][2]
        expected = volume.affine_ras(
            ipps[0], first.ImageOrientationPatient, first.PixelSpacing, volume.mean_slice_step(ipps)
        )
        for img in (lesion, brain):
            assert img.shape == (first.Columns, first.Rows, len(slices))
            np.testing.assert_allclose(img.affine, expected, atol=1e-4)
            assert img.get_data_dtype() == np.uint8
        lesion_data, brain_data = np.asarray(lesion.dataobj), np.asarray(brain.dataobj)
        assert set(np.unique(brain_data)) <= {0, 1} and set(np.unique(lesion_data)) <= set(range(6))
        assert row.has_hemorrhage == int(lesion_data.any())
        for k, (_, image_id, ds) in enumerate(slices):
            hu = _decoded(tiny, image_id, ds)
            in_brain = volume.slice_image(brain_data, k).astype(bool)
            in_lesion = volume.slice_image(lesion_data, k) > 0
            # Voxel (col, row, k) is pixel [row, col]: air never falls inside the brain mask.
            assert (hu[in_brain] > -200).mean() > 0.99
            brain_hu.append(hu[in_brain & ~in_lesion])
            blood.append(hu[in_lesion])
    brain_hu, blood = np.concatenate(brain_hu), np.concatenate(blood)
    assert 10 < np.median(brain_hu) < 45
    assert len(blood) > 0 and np.median(blood) > np.median(brain_hu) + 15


def test_labels_follow_the_lesion_masks_exactly(tiny):
    labels = _labels(tiny)
    series = pd.read_csv(tiny / "ground_truth" / "series.csv")
    seen = set()
    for uid in series["series_uid"]:
        folder = tiny / "ground_truth" / uid
        ids = pd.read_json(folder / "ids.json", typ="series")["image_ids"]
        lesion = np.asarray(nib.load(folder / "lesion.nii.gz").dataobj)
        for k, image_id in enumerate(ids):
            codes = volume.slice_image(lesion, k)
            expected = [int((codes == SUBTYPE_CODES[s]).any()) for s in SUBTYPES]
            assert labels[image_id] == expected + [int(any(expected))], image_id
            seen |= {s for s, v in zip(SUBTYPES, expected, strict=True) if v}
    assert seen, "the tiny set should contain at least one bleed"


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    small = dict(TINY, n_patients=2, n_slices=3, matrix=64)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset(tmp_path / name, **dict(small, seed=seed), quirks=True)

    def tree(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert a["stage_2_train.csv"] != c["stage_2_train.csv"]
    dicoms_a = {v for k, v in a.items() if k.endswith(".dcm")}
    dicoms_c = {v for k, v in c.items() if k.endswith(".dcm")}
    assert not dicoms_a & dicoms_c


def test_quirks_can_be_switched_off_and_forced(tmp_path):
    off = plan_dataset(4, 3, 64, 0.5, seed=0, quirks=False)
    assert not any(s.quirks for s in off.series) and not off.duplicated_ids
    forced = plan_dataset(2, 3, 64, 0.5, seed=0, quirks=True)
    assert {q for s in forced.series for q in s.quirks} == set(QUIRKS) - {"duplicate_csv_rows"}
    assert len(forced.duplicated_ids) == 4


def test_bad_sizes_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="hemorrhage_fraction"):
        plan_dataset(4, 3, 64, 1.5, seed=0)
    with pytest.raises(ValueError, match="matrix"):
        plan_dataset(4, 3, 8, 0.5, seed=0)


def _stage_args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    synthesize.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_stage_writes_only_a_note_when_the_source_is_not_synthetic(tmp_path):
    out = tmp_path / "raw"
    summary = synthesize.run(_stage_args(source="rsna", out=str(out)))
    assert "skipped" in summary
    assert [p.name for p in out.iterdir()] == ["SKIPPED.txt"]
    assert "rsna" in (out / "SKIPPED.txt").read_text()


def test_stage_writes_the_dataset_and_a_contact_sheet(tmp_path):
    out = tmp_path / "raw"
    args = _stage_args(n_patients=2, n_slices=3, matrix=64, n_jobs=1, out=str(out))
    summary = synthesize.run(args)
    assert "2 series, 6 images" in summary
    assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == [
        "contact_sheet.png",
        "ground_truth",
        "stage_2_train",
        "stage_2_train.csv",
    ]


def test_the_healthy_twin_is_the_same_head_without_its_bleeds_and_without_noise():
    plan = plan_dataset(**TINY)
    bleeding = [p for p in plan.series if p.lesion_kinds]
    assert bleeding, "TINY must plan a series with a bleed"
    p = bleeding[0]
    real, twin = dataset.render_plan(p), dataset.render_plan(p, healthy_twin=True)
    assert real.lesion.any() and not twin.lesion.any()
    np.testing.assert_array_equal(real.brain, twin.brain)
    assert [x.kind for x in twin.lesions] == [x.kind for x in real.lesions]
    residual = real.hu - twin.hu
    far = (real.brain > 0) & (ndimage.distance_transform_edt(real.lesion == 0) > 6)
    # Away from the bleed the difference is the noise alone: centred, of the head's level.
    assert abs(float(residual[far].mean())) < 0.5
    assert 0.5 * real.head.noise_hu < float(residual[far].std()) < 1.5 * real.head.noise_hu
    # On the bleed it is the blood: far above what noise gives.
    assert float(np.abs(residual[real.lesion > 0]).mean()) > 2 * real.head.noise_hu
