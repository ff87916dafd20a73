"""Write synthetic slices as DICOM files with the tags (and the quirks) of the RSNA data.

RSNA files carry only a handful of tags: patient/study/series/SOP identifiers in
``ID_<hex>`` form, position, orientation, spacing, window, rescale and the pixel
module. SliceThickness, SliceLocation and InstanceNumber are absent, so readers must
order slices by ImagePositionPatient; this writer leaves them out too.

Pixel encodings (how HU are stored):
- ``signed16``: PixelRepresentation 1, BitsStored 16, intercept -1024 (most files).
- ``unsigned12``: PixelRepresentation 0, BitsStored 12, intercept -1024 (also common, harmless).
- ``rsna12``: the quirk: PixelRepresentation 0, BitsStored 12, intercept 1, values that
  only decode right with the community fix ``x = stored + 1000; x[x >= 4096] -= 4096;
  HU = x * slope - 1000``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

ENCODINGS = ("signed16", "unsigned12", "rsna12")
# Outside the reconstruction circle scanners store a padding value far below air.
PADDING_STORED = -2000


@dataclass(frozen=True)
class SliceHeader:
    """What varies between files: identifiers, geometry, window and encoding."""

    image_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    ipp: tuple[float, float, float]
    iop: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    window_center: float
    window_width: float
    encoding: str = "signed16"
    multivalue_window: bool = False


def encode_hu(
    hu: np.ndarray, encoding: str, outside_fov: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Stored pixel values and the RescaleIntercept that the header must carry (slope 1)."""
    hu = np.rint(hu).astype(np.int32)
    if encoding == "signed16":
        stored = np.clip(hu + 1024, -32768, 32767)
        if outside_fov is not None:
            stored = np.where(outside_fov, PADDING_STORED, stored)
        return stored.astype(np.int16), -1024.0
    if encoding == "unsigned12":
        stored = np.clip(hu + 1024, 0, 4095)
        if outside_fov is not None:
            stored = np.where(outside_fov, 0, stored)
        return stored.astype(np.uint16), -1024.0
    if encoding == "rsna12":
        # The fix maps stored s to HU = ((s + 1000) mod 4096) - 1000, so s = HU mod 4096.
        return np.mod(np.clip(hu, -1000, 3095), 4096).astype(np.uint16), 1.0
    raise ValueError(f"unknown pixel encoding {encoding!r}; expected one of {ENCODINGS}")


def decode_hu(stored: np.ndarray, intercept: float, slope: float, rsna12_fix: bool) -> np.ndarray:
    """HU from stored values; `rsna12_fix` applies the community correction (for tests)."""
    if not rsna12_fix:
        return stored.astype(np.float64) * slope + intercept
    x = stored.astype(np.int32) + 1000
    x[x >= 4096] -= 4096
    return x * slope - 1000.0


def intended_hu(hu: np.ndarray, encoding: str, outside_fov: np.ndarray | None = None) -> np.ndarray:
    """The HU a correct reader must get back from `encode_hu` (rounded, clipped, padded)."""
    stored, intercept = encode_hu(hu, encoding, outside_fov)
    if encoding == "rsna12":
        return decode_hu(stored, intercept, 1.0, rsna12_fix=True)
    return stored.astype(np.float64) + intercept


def write_slice(path: Path, header: SliceHeader, stored: np.ndarray, intercept: float) -> None:
    """One DICOM Part 10 file, explicit VR little endian, with RSNA's tag set."""
    with warnings.catch_warnings():
        # "ID_..." is not a numeric UID; the RSNA files use such values all the same.
        warnings.simplefilter("ignore")
        _build_dataset(path, header, stored, intercept).save_as(path, enforce_file_format=True)


def _build_dataset(
    path: Path, header: SliceHeader, stored: np.ndarray, intercept: float
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = header.image_id
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPInstanceUID = header.image_id
    ds.Modality = "CT"
    ds.PatientID = header.patient_id
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = [_ds(v) for v in header.ipp]
    ds.ImageOrientationPatient = [_ds(v) for v in header.iop]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.PixelSpacing = [_ds(v) for v in header.pixel_spacing]
    ds.BitsAllocated = 16
    signed = header.encoding == "signed16"
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if header.multivalue_window:
        ds.WindowCenter = MultiValue(DSfloat, [header.window_center] * 2)
        ds.WindowWidth = MultiValue(DSfloat, [header.window_width] * 2)
    else:
        ds.WindowCenter = _ds(header.window_center)
        ds.WindowWidth = _ds(header.window_width)
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(1.0)
    ds.PixelData = np.ascontiguousarray(stored).astype("<i2" if signed else "<u2").tobytes()
    return ds


def _ds(value: float) -> DSfloat:
    """A decimal string of at most 16 characters, like scanners write."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return DSfloat(text)


def truncate_pixel_data(path: Path, pixel_bytes: int, keep_fraction: float = 0.5) -> None:
    """Cut the file inside its PixelData (the last element), as a broken transfer would.

    The header still reads (`stop_before_pixels`), but the pixels cannot be decoded.
    """
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - int(pixel_bytes * (1 - keep_fraction)))
