"""Compressed CT slices decode to the same HU as their uncompressed twins.

RLE Lossless and JPEG 2000 Lossless files are made here with pydicom's own encoders
(RLE natively, JPEG 2000 through pylibjpeg-openjpeg). JPEG-LS has no encoder among the
pinned packages, so its twin is built from pydicom's test corpus: the JPEG-LS frame of
``MR_small_jpeg_ls_lossless.dcm`` goes into a CT header, and the uncompressed
``MR_small.dcm`` pixels into the same header uncompressed.
"""

from __future__ import annotations

import copy

import dicom_fixtures as fx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from ichinpaint import dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # RSNA-style UIDs


def ct_slice(encoding: str) -> pydicom.Dataset:
    spec = fx.series_specs(number=21, n_slices=1, matrix=(64, 48), encoding=encoding)[0]
    return fx.make_dataset(spec)


def round_trip(tmp_path, ds: pydicom.Dataset, name: str) -> dict:
    path = fx.save_dataset(ds, tmp_path / f"{name}.dcm")
    return dicom.read_header(path), pydicom.dcmread(path)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("encoding", ["signed", "unsigned", "rsna12"])
def test_encoded_here_decodes_to_the_same_hu(tmp_path, syntax, encoding):
    plain = ct_slice(encoding)
    expected = dicom.decode_hu(plain)
    packed = copy.deepcopy(plain)
    with fx.quiet_pydicom():
        packed.compress(syntax)
    assert packed.file_meta.TransferSyntaxUID == syntax
    record, ds = round_trip(tmp_path, packed, "ID_00000c0de")
    assert record["reason"] == "", record["detail"]
    np.testing.assert_array_equal(dicom.decode_hu(ds), expected)


def corpus_twins() -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """(uncompressed, JPEG-LS) CT slices holding MR_small's stored values."""
    raw = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    packed = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    twins = []
    for source, syntax in ((raw, ExplicitVRLittleEndian), (packed, JPEGLSLossless)):
        ds = ct_slice("signed")
        ds.file_meta.TransferSyntaxUID = syntax
        for name in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
            setattr(ds, name, getattr(source, name))
        ds.PixelRepresentation = source.PixelRepresentation
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds["PixelData"] = copy.deepcopy(source["PixelData"])
        twins.append(ds)
    return twins[0], twins[1]


def test_jpeg_ls_ct_slice_decodes_to_the_hu_of_its_twin(tmp_path):
    plain, packed = corpus_twins()
    record_plain, plain_read = round_trip(tmp_path, plain, "ID_0000000a1")
    record_packed, packed_read = round_trip(tmp_path, packed, "ID_0000000a2")
    assert record_plain["reason"] == record_packed["reason"] == ""
    hu = dicom.decode_hu(packed_read)
    np.testing.assert_array_equal(hu, dicom.decode_hu(plain_read))
    raw = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(hu, raw.astype(np.int32) - 1024)


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_standard_lossless_syntaxes_have_a_decoder(syntax):
    # JPEG Lossless (process 14) has no encoder among the pinned packages: only its
    # decoder (pylibjpeg-libjpeg) is checked.
    assert get_decoder(syntax).is_available


def test_a_syntax_without_decoder_is_excluded_with_the_reason(tmp_path):
    ds = ct_slice("signed")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no image decoder
    ds["PixelData"].VR = "OB"
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    record, _ = round_trip(tmp_path, ds, "ID_0000000a3")
    assert record["reason"] == dicom.NO_DECODER
    assert "1.2.840.10008.1.2.4.100" in record["detail"]
