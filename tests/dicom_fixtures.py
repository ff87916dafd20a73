"""Build small, real DICOM CT files with pydicom, one switch per RSNA quirk.

The tests of the `filter` and `nifti` stages write these to a temporary RSNA-layout
directory (``stage_2_train/ID_<hex>.dcm`` + ``stage_2_train.csv``) and check what the
stages make of them. Every file is a complete DICOM Part 10 file that other readers
(dcm2niix) accept too, so the fixtures test the readers, not a shortcut.

Encodings (how HU are stored):
- ``signed``: PixelRepresentation 1, 16 bits stored, intercept 0 (stored = HU).
- ``unsigned``: PixelRepresentation 0, 16 bits stored, intercept -1024.
- ``rsna12``: the RSNA quirk: PixelRepresentation 0, BitsStored 12, intercept 1, and
  the values that need ``x = stored + 1000; x[x >= 4096] -= 4096; HU = x - 1000``.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from ichinpaint import dicom
from ichinpaint.constants import LABELS

ENCODINGS = ("signed", "unsigned", "rsna12")


def hex_id(prefix: str, number: int, digits: int = 9) -> str:
    """RSNA-style identifier (``ID_<hex>``), deterministic per number."""
    return f"{prefix}{number:0{digits}x}"


def phantom_hu(rows: int, cols: int, seed: int) -> np.ndarray:
    """A head-like HU image: air, a skull ring, brain with texture, in [-1000, 1500]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = np.hypot((yy - rows / 2) / (rows / 2.4), (xx - cols / 2) / (cols / 2.4))
    hu = np.full((rows, cols), -1000, dtype=np.int32)
    hu[r < 1.0] = 1200  # skull
    brain = r < 0.85
    hu[brain] = 30 + rng.integers(-8, 9, size=int(brain.sum()))
    hu[(r < 0.2)] = 5  # a ventricle-like region
    return hu.astype(np.int16)


def encode_hu(hu: np.ndarray, encoding: str) -> tuple[np.ndarray, dict]:
    """Stored pixel values and the header fields that turn them back into `hu`."""
    hu = np.asarray(hu, dtype=np.int32)
    if encoding == "signed":
        return hu.astype(np.int16), {
            "PixelRepresentation": 1,
            "BitsStored": 16,
            "RescaleIntercept": "0",
        }
    if encoding == "unsigned":
        if hu.min() < -1024:
            raise ValueError("unsigned encoding needs HU >= -1024")
        return (hu + 1024).astype(np.uint16), {
            "PixelRepresentation": 0,
            "BitsStored": 16,
            "RescaleIntercept": "-1024",
        }
    if encoding == "rsna12":
        if hu.min() < -1000 or hu.max() > 3095:
            raise ValueError("the RSNA 12-bit encoding holds HU in [-1000, 3095]")
        # Inverse of the fix: x = HU + 1000 in [0, 4096) and stored = (x - 1000) mod 4096.
        return np.mod(hu, 4096).astype(np.uint16), {
            "PixelRepresentation": 0,
            "BitsStored": 12,
            "RescaleIntercept": "1",
        }
    raise ValueError(f"unknown encoding {encoding!r}; one of {ENCODINGS}")


def tilted_iop(tilt_deg: float) -> list[float]:
    """IOP of an axial slice tilted about the LPS x axis (gantry tilt)."""
    t = np.radians(tilt_deg)
    return [1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(-np.sin(t))]


@dataclass
class SliceSpec:
    """Everything one fixture file needs; defaults make an ordinary axial slice."""

    image_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    ipp: Sequence[float]
    hu: np.ndarray
    iop: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    pixel_spacing: Sequence[float] = (0.5, 0.5)
    encoding: str = "signed"
    multivalue_window: bool = False
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """No validation warnings or log lines while building files with RSNA's ``ID_...`` UIDs."""
    settings = pydicom.config.settings
    previous = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with dicom.quiet_pydicom():
            yield
    finally:
        settings.writing_validation_mode = previous


def make_dataset(spec: SliceSpec) -> Dataset:
    """A CT image dataset as RSNA ships them (no SliceThickness/SliceLocation/InstanceNumber)."""
    with quiet_pydicom():  # RSNA's ID_... UIDs are not valid UIDs; RSNA uses them
        return _make_dataset(spec)


def _make_dataset(spec: SliceSpec) -> Dataset:
    stored, fields = encode_hu(spec.hu, spec.encoding)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = spec.image_id
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = spec.image_id
    ds.Modality = "CT"
    ds.PatientID = spec.patient_id
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.ImagePositionPatient = [f"{v:.6f}" for v in spec.ipp]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in spec.iop]
    ds.PixelSpacing = [f"{v:.6f}" for v in spec.pixel_spacing]
    ds.Rows, ds.Columns = spec.hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = fields["BitsStored"]
    ds.HighBit = fields["BitsStored"] - 1
    ds.PixelRepresentation = fields["PixelRepresentation"]
    ds.RescaleIntercept = fields["RescaleIntercept"]
    ds.RescaleSlope = "1"
    if spec.multivalue_window:
        ds.WindowCenter = MultiValue(str, ["00036", "00036"])
        ds.WindowWidth = MultiValue(str, ["00080", "00080"])
    else:
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
    ds.PixelData = stored.tobytes()
    return ds


def save_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    """Save as a DICOM Part 10 file, without pydicom's warnings about RSNA's UIDs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_pydicom():
        ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom(path: str | os.PathLike, spec: SliceSpec) -> Path:
    return save_dataset(make_dataset(spec), path)


def truncate_file(path: str | os.PathLike, drop_bytes: int) -> None:
    """Cut the last `drop_bytes` off a file, as an interrupted download would."""
    size = Path(path).stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - drop_bytes)


def series_specs(
    *,
    number: int,
    n_slices: int = 4,
    matrix: tuple[int, int] = (16, 16),
    tilt_deg: float = 0.0,
    step_mm: float = 5.0,
    encoding: str = "signed",
    patient_number: int | None = None,
    hemorrhage_slices: Iterable[int] = (),
    multivalue_window: bool = False,
) -> list[SliceSpec]:
    """Specs of one series, slices listed in scrambled order (file order must not matter).

    With a gantry tilt the IOP is tilted and the IPPs still step along LPS z, as on
    tilted scanners, so the step is not parallel to the slice normal.
    """
    patient = hex_id("ID_", patient_number if patient_number is not None else number)
    study = hex_id("ID_", 0x100000 + number, 10)
    series = hex_id("ID_", 0x200000 + number, 10)
    rows, cols = matrix
    iop = tilted_iop(tilt_deg)
    bleeding = set(hemorrhage_slices)
    specs = []
    for k in range(n_slices):
        labels = dict.fromkeys(LABELS, 0)
        if k in bleeding:
            labels["subdural"] = labels["any"] = 1
        specs.append(
            SliceSpec(
                image_id=hex_id("ID_", number * 1000 + k),
                patient_id=patient,
                study_uid=study,
                series_uid=series,
                ipp=(-0.25 * cols, -0.25 * rows, 10.0 + k * step_mm),
                hu=phantom_hu(rows, cols, seed=number * 1000 + k),
                iop=iop,
                encoding=encoding,
                multivalue_window=multivalue_window,
                labels=labels,
            )
        )
    order = np.random.default_rng(number).permutation(n_slices)
    return [specs[i] for i in order]


def label_rows(specs: Iterable[SliceSpec]) -> list[tuple[str, int]]:
    """The six RSNA CSV rows of each slice, in the RSNA subtype order."""
    return [(f"{s.image_id}_{name}", s.labels[name]) for s in specs for name in LABELS]


def write_label_csv(path: str | os.PathLike, rows: Iterable[tuple[str, int | str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ID", "Label"])
        writer.writerows(rows)
    return path


def write_rsna_dir(root: str | os.PathLike, specs: Iterable[SliceSpec], extra_rows=()) -> Path:
    """Write `specs` as an RSNA-layout directory; returns the root."""
    root = Path(root)
    specs = list(specs)
    for spec in specs:
        write_dicom(root / "stage_2_train" / f"{spec.image_id}.dcm", spec)
    write_label_csv(root / "stage_2_train.csv", label_rows(specs) + list(extra_rows))
    return root


@dataclass
class QuirkyDataset:
    """An RSNA-layout directory with every quirk once, and what the stages should make of it."""

    root: Path
    specs: list[SliceSpec]  # every slice written as a readable file
    expected_reason: dict[str, str]  # image_id -> exclusion reason at the filter stage
    duplicated_rows: int
    refused_series: dict[str, str]  # series_uid -> reason at the nifti stage


def write_quirky_dataset(root: str | os.PathLike) -> QuirkyDataset:
    """Twelve patients, thirteen series, every quirk of the real download once.

    Series 1-6 healthy, 7-8 with hemorrhage, patient 9 has two series, 10 is tilted,
    11 uses the RSNA 12-bit encoding with MultiValue windows, 12 is a non-square
    unsigned series. Series 3 loses its middle slice to truncation (so the nifti
    stage must refuse it: uneven spacing); series 4 has a top slice without label
    rows; the CSV lists four images twice, names one image that has no file, and one
    file is not DICOM at all.
    """
    root = Path(root)
    by_series: dict[int, list[SliceSpec]] = {}
    for n in range(1, 9):
        by_series[n] = series_specs(
            number=n, n_slices=4, hemorrhage_slices=(1, 2) if n >= 7 else ()
        )
    by_series[9] = series_specs(number=9, n_slices=3)
    by_series[13] = series_specs(number=13, n_slices=3, patient_number=9)
    by_series[10] = series_specs(number=10, n_slices=4, tilt_deg=18)
    by_series[11] = series_specs(number=11, n_slices=4, encoding="rsna12", multivalue_window=True)
    by_series[12] = series_specs(number=12, n_slices=4, encoding="unsigned", matrix=(12, 20))
    by_series[4] = series_specs(number=4, n_slices=5)
    specs = [s for n in sorted(by_series) for s in by_series[n]]
    for spec in specs:
        write_dicom(root / "stage_2_train" / f"{spec.image_id}.dcm", spec)

    def by_k(n: int, k: int) -> SliceSpec:
        return sorted(by_series[n], key=lambda s: s.ipp[2])[k]

    truncated = by_k(3, 1)
    truncate_file(root / "stage_2_train" / f"{truncated.image_id}.dcm", 200)
    unlabelled = by_k(4, 4)
    labelled = [s for s in specs if s is not unlabelled]
    rows = label_rows(labelled)
    rows += label_rows([by_k(1, 0), by_k(7, 1), by_k(10, 2), by_k(11, 3)])  # four images twice
    missing_file = hex_id("ID_", 0xFFFFFF)
    rows += [(f"{missing_file}_{name}", 0) for name in LABELS]
    junk = hex_id("ID_", 0xEEEEEE)
    (root / "stage_2_train" / f"{junk}.dcm").write_bytes(b"not a DICOM file")
    rows += [(f"{junk}_{name}", 0) for name in LABELS]
    write_label_csv(root / "stage_2_train.csv", rows)
    return QuirkyDataset(
        root=root,
        specs=specs,
        expected_reason={
            truncated.image_id: "corrupt_pixel_data",
            unlabelled.image_id: "no_label_row",
            missing_file: "no_file",
            junk: "unreadable_header",
        },
        duplicated_rows=24,
        refused_series={truncated.series_uid: "uneven_spacing"},
    )
