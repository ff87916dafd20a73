"""Header- and CSV-derived names never lead outside the output tree (ichinpaint.names).

Every value that becomes part of a path is covered: the SeriesInstanceUID and
StudyInstanceUID of a header (filter, nifti), the image ID of a file name (filter), the
series UID and image IDs of a hand-edited slices.csv (nifti, png via the sidecar,
detect, evaluate, the review app) and the name of a volume file (mask, png).
"""

from __future__ import annotations

import os
from pathlib import Path

import dicom_fixtures as fx
import pandas as pd
import pytest

from ichinpaint import cli, io, names, niftidir
from ichinpaint.app.data import AppPaths
from ichinpaint.detection import inputs
from ichinpaint.evaluation import series as evaluation_series
from ichinpaint.preprocess import filter as slice_filter

EVIL = [
    "../../../../{tmp}/escape/evil",
    "{tmp}/escape/abs",
    "1.2.3/4",
    "..",
    "1.2.3\x00.4",
    "ID_abc def",
    "1." + "2" * 70,  # longer than a DICOM UID may be
]
GOOD = ["1.2.840.113619.2.55.3", "ID_0123abcdef", "ID_train000001"]


@pytest.mark.parametrize("value", GOOD)
def test_good_identifiers_pass(value):
    assert names.check_series_uid(value) == value
    assert names.check_name(value) == value


@pytest.mark.parametrize("value", EVIL)
def test_bad_identifiers_are_refused(value):
    assert names.uid_problem(value)
    assert names.name_problem(value) or value.startswith("1.")
    with pytest.raises(names.UnsafeIdentifier):
        names.check_series_uid(value)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """The quirky dataset plus series whose UIDs try to escape, through filter and nifti."""
    base = tmp_path_factory.mktemp("attack")
    quirky = fx.write_quirky_dataset(base / "raw")
    escape = base / "escape"
    evil_specs = []
    for n, template in enumerate(EVIL[:4]):
        specs = fx.series_specs(number=40 + n, n_slices=3, patient_number=1)
        for spec in specs:
            spec.series_uid = template.format(tmp=base)
        evil_specs += specs
    study = fx.series_specs(number=50, n_slices=2, patient_number=2)
    for spec in study:
        spec.study_uid = "../../study"
    evil_specs += study
    for spec in evil_specs:
        fx.write_dicom(quirky.root / "stage_2_train" / f"{spec.image_id}.dcm", spec)
    odd = os.fsdecode(b"ID_\xff\xfe.dcm")  # a file name that is not UTF-8
    (quirky.root / "stage_2_train" / odd).write_bytes(b"\x00" * 200)
    with open(quirky.root / "stage_2_train.csv", "a", newline="") as fh:
        for image_id, value in fx.label_rows(evil_specs):
            fh.write(f"{image_id},{value}\n")
    out = base / "out"
    before = files_under(base)
    assert (
        cli.main(
            ["filter", "--raw_dir", str(quirky.root), "--out", str(out / "slices.csv"),
             "--metrics", str(out / "filter.json"), "--n_jobs", "1"]
        )
        == 0
    )  # fmt: skip
    assert (
        cli.main(
            ["nifti", "--raw_dir", str(quirky.root), "--slices", str(out / "slices.csv"),
             "--out", str(out / "nifti"), "--metrics", str(out / "nifti.json"), "--n_jobs", "1"]
        )
        == 0
    )  # fmt: skip
    return base, out, escape, evil_specs, before


def test_unsafe_header_uids_are_excluded_with_a_reason(attacked):
    base, out, escape, evil_specs, before = attacked
    table = pd.read_csv(out / "slices.csv", dtype=str, keep_default_na=False)
    rows = table.set_index("image_id")
    for spec in evil_specs:
        assert rows.at[spec.image_id, "reason"] == names.UNSAFE_IDENTIFIER
        assert "Instance" in rows.at[spec.image_id, "detail"]
    odd = table[table["image_id"].str.startswith("ID_\\")]
    assert list(odd["reason"]) == [names.UNSAFE_IDENTIFIER]
    metrics = io.read_json(out / "filter.json")
    assert metrics["excluded_unsafe_identifier"] == len(evil_specs) + 1
    assert metrics["images_total"] == metrics["kept"] + metrics["excluded"]


def test_nothing_is_written_outside_the_output_tree(attacked):
    base, out, escape, _, before = attacked
    assert not escape.exists()
    new = files_under(base) - before
    assert new and all(out in p.parents for p in new)


def test_nifti_refuses_an_edited_slices_csv(attacked, tmp_path):
    base, out, escape, _, _ = attacked
    table = pd.read_csv(out / "slices.csv", dtype=str, keep_default_na=False)
    kept = table["status"] == "kept"
    first = table.loc[kept, "series_uid"].iloc[0]
    hit = table["series_uid"] == first
    table.loc[hit, "series_uid"] = f"../../../{tmp_path.name}-evil"
    io.write_csv(tmp_path / "slices.csv", table)
    raw = base / "raw"
    cli.main(
        ["nifti", "--raw_dir", str(raw), "--slices", str(tmp_path / "slices.csv"),
         "--out", str(tmp_path / "nifti"), "--metrics", str(tmp_path / "nifti.json"), "--n_jobs", "1"]
    )  # fmt: skip
    metrics = io.read_json(tmp_path / "nifti.json")
    assert metrics["refused_unsafe_identifier"] == 1
    assert not list(tmp_path.parent.glob("*-evil*"))
    assert metrics["images_kept"] == (
        metrics["images_written"] + metrics["images_dropped"] + metrics["images_refused"]
    )


def test_volume_names_sidecar_ids_and_manifests_are_checked(tmp_path):
    with pytest.raises(names.UnsafeIdentifier):
        niftidir.series_uid_of(tmp_path / "..nii.gz")
    with pytest.raises(names.UnsafeIdentifier):
        niftidir.series_uid_of(tmp_path / "a b.nii.gz")
    manifest = tmp_path / "slices.csv"
    for column, value in (("series_uid", "../x"), ("image_id", "../../y")):
        frame = pd.DataFrame({"series_uid": ["ID_1"], "image_id": ["ID_2"]})
        frame[column] = value
        frame.to_csv(manifest, index=False)
        for read in (lambda: inputs.read_manifest(manifest, ["test"]),
                     lambda: evaluation_series.read_manifest(manifest)):  # fmt: skip
            with pytest.raises(names.UnsafeIdentifier, match=str(manifest)):
                read()
    with pytest.raises(names.UnsafeIdentifier):
        AppPaths.under(tmp_path).detection("../../etc/passwd")


def test_png_refuses_an_unsafe_image_id_in_a_sidecar(tmp_path):
    import nibabel as nib
    import numpy as np

    from ichinpaint.preprocess import png as png_export

    for folder in ("nifti", "masks", "tmp"):
        (tmp_path / folder).mkdir()
    volume = np.zeros((8, 8, 2), np.int16)
    for folder in ("nifti", "masks"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / folder / "ID_1.nii.gz")
    io.write_json(
        tmp_path / "nifti/ID_1.json",
        {"image_ids": ["ID_2", "../../../evil"], "patient_id": "p", "split": "test"},
    )
    with pytest.raises(names.UnsafeIdentifier, match="evil"):
        png_export.export_series(
            tmp_path / "nifti/ID_1.nii.gz", masks_dir=tmp_path / "masks", tmp_dir=tmp_path / "tmp",
            out_dir=tmp_path / "out", canvas=8, img_size=8, min_fraction=0.0,
        )  # fmt: skip
    assert not list(tmp_path.parent.glob("evil*"))


def test_filter_reasons_cover_the_names_module():
    assert names.UNSAFE_IDENTIFIER in slice_filter.REASONS
