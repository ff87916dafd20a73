"""Seeded fuzzing of DICOM headers and bytes and of label CSVs (issue 15).

Every mutated input must end in exactly one of three outcomes:

- **kept**, and then its HU equal an independent decoding of the header as it stands
  (``stored x slope + intercept``, the RSNA 12-bit rule for CT), with nothing clipped;
- **excluded** with a reason from the vocabulary and a detail;
- **a one-line error** naming the file (label CSVs that cannot be read).

A traceback fails the test (the CLI raises in tests), and so does a silent loss (every
file has one row in slices.csv and the counts reconcile) or a file written outside the
output directory. Fast: a few hundred small files, well under a minute.
"""

from __future__ import annotations

import codecs
import contextlib
import io as stdio
import re
from pathlib import Path

import dicom_fixtures as fx
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from ichinpaint import cli, dicom, io, labels, names, volume
from ichinpaint.preprocess import filter as slice_filter

SEED = 15
N_SERIES = 30
TAGS = [
    *dicom.HEADER_FIELDS,
    "RescaleIntercept",
    "RescaleSlope",
    "Modality",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "SamplesPerPixel",
]
ABSURD = ["NaN", "inf", "-inf", "1e9", "-1e9", "0", "-1", "abc", "1e-30", ""]


def mutate_dataset(ds: pydicom.Dataset, rng: np.random.Generator) -> str:
    """Change one thing of the header; returns what (for failure messages)."""
    kind = rng.choice(
        ["delete", "rescale", "spacing", "ipp", "rows", "columns", "modality", "uid", "bits"]
    )
    if kind == "delete":
        tag = str(rng.choice(TAGS))
        if tag in ds:
            delattr(ds, tag)
        return f"deleted {tag}"
    if kind == "rescale":
        tag = str(rng.choice(["RescaleIntercept", "RescaleSlope"]))
        value = str(rng.choice(ABSURD))
        try:
            ds[tag].value = value
        except ValueError:  # not even a DS string: store it as text, as a broken writer would
            ds.add_new(ds[tag].tag, "LO", value)
        return f"{tag}={value!r}"
    if kind == "spacing":
        value = str(rng.choice(["NaN", "0", "-0.5", "1e12", "inf"]))
        ds.PixelSpacing = [value, "0.5"]
        return f"PixelSpacing={value}"
    if kind == "ipp":
        ds.ImagePositionPatient = ["0", "0", str(rng.choice(["NaN", "inf", "1e300"]))]
        return "ImagePositionPatient non-finite"
    if kind in ("rows", "columns"):
        name = "Rows" if kind == "rows" else "Columns"
        value = int(rng.choice([1, 8, 15, 17, 32, 0]))
        setattr(ds, name, value)
        return f"{name}={value}"
    if kind == "modality":
        ds.Modality = str(rng.choice(["MR", "CR", "US", "PT", "OT", "ct "]))
        return f"Modality={ds.Modality!r}"
    if kind == "uid":
        ds.SeriesInstanceUID = str(rng.choice(["../../x/evil", "/tmp/abs", "a/b", "1.2..3", " "]))
        return f"SeriesInstanceUID={ds.SeriesInstanceUID!r}"
    ds.BitsStored = int(rng.choice([8, 12, 16, 17]))
    return f"BitsStored={ds.BitsStored}"


def mutate_bytes(path: Path, rng: np.random.Generator) -> str:
    """Truncate the file or flip bytes of its header (not of its pixels: no oracle for those)."""
    data = bytearray(path.read_bytes())
    pixels_at = data.rfind(b"\xe0\x7f\x10\x00")  # the PixelData tag
    if rng.random() < 0.5:
        cut = int(rng.integers(0, len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"truncated to {cut} of {len(data)} bytes"
    flips = int(rng.integers(1, 6))
    for _ in range(flips):
        at = int(rng.integers(132, max(133, pixels_at)))
        data[at] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    return f"{flips} header bit flips"


def oracle_hu(ds: pydicom.Dataset) -> np.ndarray:
    """HU from the header as it stands, written independently of `dicom.decode_hu`."""
    stored = ds.pixel_array.astype(np.float64)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    modality = str(ds.get("Modality", "CT")).strip().upper()
    if (
        modality == "CT"
        and int(ds.BitsStored) == 12
        and int(ds.PixelRepresentation) == 0
        and intercept > -100
    ):
        stored = np.where(stored + 1000 >= 4096, stored + 1000 - 4096, stored + 1000)
        intercept = -1000.0
    return np.rint(stored * slope + intercept)


def build_fuzzed_tree(root: Path, rng: np.random.Generator) -> dict[str, str]:
    """An RSNA-layout tree with most files mutated; returns image ID -> mutation."""
    mutations, specs, intact = {}, [], set()
    for n in range(N_SERIES):
        encoding = fx.ENCODINGS[n % len(fx.ENCODINGS)]
        series = fx.series_specs(number=100 + n, n_slices=4, encoding=encoding)
        if n % 6 == 5:  # duplicate positions inside a series, files otherwise intact
            series[1].ipp = series[0].ipp
            intact.update(s.image_id for s in series)
        specs += series
    for spec in specs:
        path = root / "stage_2_train" / f"{spec.image_id}.dcm"
        ds = fx.make_dataset(spec)
        what = "none"
        roll = 1.0 if spec.image_id in intact else rng.random()
        if roll < 0.45:
            with fx.quiet_pydicom():
                what = mutate_dataset(ds, rng)
        fx.save_dataset(ds, path)
        if 0.45 <= roll < 0.7:
            what = mutate_bytes(path, rng)
        mutations[spec.image_id] = what
    fx.write_label_csv(root / "stage_2_train.csv", fx.label_rows(specs))
    return mutations


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    raw, out = base / "raw", base / "out"
    mutations = build_fuzzed_tree(raw, np.random.default_rng(SEED))
    before = {p for p in base.rglob("*")}
    argv = ["--raw_dir", str(raw), "--n_jobs", "1"]
    assert cli.main(["filter", *argv, "--out", str(out / "slices.csv"),
                     "--metrics", str(out / "filter.json"), "--val_fraction", "0.2",
                     "--test_healthy_fraction", "0.2"]) == 0  # fmt: skip
    assert cli.main(["nifti", *argv, "--slices", str(out / "slices.csv"),
                     "--out", str(out / "nifti"), "--metrics", str(out / "nifti.json")]) == 0  # fmt: skip
    created = {p for p in base.rglob("*")} - before
    return raw, out, mutations, created


def test_every_file_is_kept_with_correct_hu_or_excluded_with_a_reason(fuzzed):
    raw, out, mutations, _ = fuzzed
    table = pd.read_csv(out / "slices.csv", dtype=str, keep_default_na=False)
    assert sorted(table["image_id"]) == sorted(mutations)  # one row per file, no loss
    assert table["image_id"].is_unique
    excluded = table[table["status"] == "excluded"]
    assert set(excluded["reason"]) <= set(slice_filter.REASONS)
    assert (excluded["detail"] != "").all()
    kinds = set(excluded["reason"])
    assert {dicom.UNUSABLE_RESCALE, dicom.NOT_CT, dicom.INCOMPLETE_HEADER} <= kinds
    series = pd.read_csv(out / "nifti/series.csv", dtype=str, keep_default_na=False)
    refused = series[series["status"] == "refused"]
    for row in table[table["status"] == "kept"].itertuples():
        ds = pydicom.dcmread(raw / "stage_2_train" / f"{row.image_id}.dcm")
        try:
            with dicom.quiet_pydicom():
                hu = dicom.decode_hu(ds)
        except Exception:
            # Pixels that only fail when decoded (HU beyond int16, say) are the nifti
            # stage's recorded refusal of the series, with the file named.
            why = refused.loc[refused["series_uid"] == row.series_uid]
            assert len(why) == 1, mutations[row.image_id]
            if why["reason"].iloc[0] == "decode_failed":
                assert row.image_id in why["detail"].iloc[0]
            continue
        np.testing.assert_array_equal(hu, oracle_hu(ds), err_msg=mutations[row.image_id])
    unmutated = table[table["image_id"].map(mutations) == "none"]
    assert (unmutated["status"] == "kept").all() or set(
        unmutated.loc[unmutated["status"] != "kept", "reason"]
    ) <= {"fraction_subsampled"}
    metrics = io.read_json(out / "filter.json")
    assert metrics["images_total"] == metrics["kept"] + metrics["excluded"] == len(mutations)


def test_volumes_hold_the_hu_of_their_files_and_counts_reconcile(fuzzed):
    raw, out, mutations, _ = fuzzed
    metrics = io.read_json(out / "nifti.json")
    assert metrics["images_kept"] == (
        metrics["images_written"] + metrics["images_dropped"] + metrics["images_refused"]
    )
    series = pd.read_csv(out / "nifti/series.csv", dtype=str, keep_default_na=False)
    assert set(series.loc[series["status"] == "refused", "reason"]) <= set(dicom.REFUSAL_REASONS)
    assert "duplicate_positions" in set(series["reason"])
    written = series[series["status"] == "written"]
    assert len(written) > 0
    for uid in written["series_uid"]:
        image = nib.load(out / "nifti" / f"{uid}.nii.gz")
        data = np.asarray(image.dataobj)
        ids = io.read_json(out / "nifti" / f"{uid}.json")["image_ids"]
        for k, image_id in enumerate(ids):
            ds = pydicom.dcmread(raw / "stage_2_train" / f"{image_id}.dcm")
            np.testing.assert_array_equal(volume.slice_image(data, k), oracle_hu(ds))


def test_nothing_is_written_outside_the_output_directory(fuzzed):
    raw, out, _, created = fuzzed
    assert created and all(out == p or out in p.parents for p in created)


# -- label CSVs --------------------------------------------------------------------------
def csv_text(rows: list[tuple[str, int]], line_end: str = "\n") -> str:
    return line_end.join(["ID,Label", *(f"{i},{v}" for i, v in rows)]) + line_end


def variants(rows: list[tuple[str, int]], rng: np.random.Generator):
    """(name, bytes, readable?) for encodings, BOM, CRLF and malformed rows."""
    text = csv_text(rows)
    yield "utf-8", text.encode(), True
    yield "utf-8 BOM", codecs.BOM_UTF8 + text.encode(), True
    yield "CRLF", csv_text(rows, "\r\n").encode(), True
    yield "utf-16", text.encode("utf-16"), True
    yield (
        "utf-16-le BOM CRLF",
        codecs.BOM_UTF16_LE + csv_text(rows, "\r\n").encode("utf-16-le"),
        True,
    )
    yield "latin-1", (text + "ID_café_any,0\n").encode("latin-1"), False
    yield "utf-16 without BOM", text.encode("utf-16-le"), False
    lines = text.splitlines()
    for _ in range(6):
        broken = list(lines)
        at = int(rng.integers(1, len(broken)))
        choice = int(rng.integers(0, 5))
        broken[at] = [
            broken[at] + ",extra",
            broken[at].split(",")[0],
            broken[at].replace("ID_", "XX_"),
            broken[at][:-1] + "7",
            '"' + broken[at],
        ][choice]
        yield f"malformed row {at} ({choice})", ("\n".join(broken) + "\n").encode(), False
    yield "empty", b"", False
    yield "header only", b"ID,Label\n", None


def test_label_csvs_read_correctly_or_stop_with_one_line_naming_the_file(tmp_path, monkeypatch):
    specs = fx.series_specs(number=7, n_slices=3)
    rows = fx.label_rows(specs)
    expected = labels.read_labels(fx.write_label_csv(tmp_path / "good.csv", rows)).frame
    monkeypatch.delenv("ICHINPAINT_DEBUG", raising=False)
    rng = np.random.default_rng(SEED)
    for name, data, readable in variants(rows, rng):
        root = tmp_path / name.replace(" ", "_")
        fx.write_rsna_dir(root, specs)
        csv = root / "stage_2_train.csv"
        csv.write_bytes(data)
        if readable:
            pd.testing.assert_frame_equal(labels.read_labels(csv).frame, expected, obj=name)
            continue
        if readable is False:
            with pytest.raises(labels.LabelError, match=re.escape(str(csv))):
                labels.read_labels(csv)
        err = stdio.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["filter", "--raw_dir", str(root), "--n_jobs", "1",
                             "--out", str(root / "o.csv"), "--metrics", str(root / "o.json")])  # fmt: skip
        text = err.getvalue()
        lines = [line for line in text.splitlines() if line.startswith("ichinpaint ")]
        assert code == 1, name
        assert "Traceback" not in text and len(lines) == 1, (name, lines)
        assert readable is None or str(csv) in lines[0], (name, lines)
        assert not (root / "o.csv").exists()


def test_unsafe_names_never_reach_a_path():
    rng = np.random.default_rng(SEED)
    alphabet = list("abcdefID_0123456789./\\ -\x00é~$*")
    for _ in range(2000):
        value = "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))
        if names.is_safe_name(value):
            assert "/" not in value and "\\" not in value and value not in (".", "..")
            assert not value.startswith((".", "-")) and value.isascii()
        if names.is_series_uid(value):
            assert names.is_safe_name(value)
