"""DICOM reading for RSNA-layout CT: headers, pixel-data integrity, HU decoding, series stacking.

Three jobs, each shaped by the real RSNA download (752k files):

- `read_header`: the few header fields the pipeline needs, without reading pixels, plus a
  cheap integrity check of PixelData (declared and available bytes against
  Rows x Columns x BitsAllocated / 8), so a truncated file is caught before anything
  tries to decode it.
- `decode_hu`: stored values to HU, including the RSNA 12-bit fix (some files say
  BitsStored 12, PixelRepresentation 0 and carry values that only make sense after
  ``x = stored + 1000; x[x >= 4096] -= 4096; HU = x * slope - 1000``).
- `load_series`: the slices of one series checked for consistency, sorted along the
  slice normal and stacked into a ``data[col, row, k]`` HU volume with its RAS affine
  (see `ichinpaint.volume`). Anything that cannot be stacked without guessing raises
  `SeriesRefused` with a reason from `REFUSAL_REASONS`.

RSNA files have no SliceThickness, SliceLocation or InstanceNumber: nothing here uses
them. Their UIDs are ``ID_<hex>`` strings that pydicom flags as invalid UIDs, so
pydicom's validation warnings are silenced while reading.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ichinpaint import volume

PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# Elements larger than this are not read while looking at headers; PixelData of any
# real image is larger, so it stays on disk and only its length and offset are seen.
DEFER_BYTES = 1024

# Why an image is left out at the header stage (slices.csv `reason`).
CORRUPT_PIXEL_DATA = "corrupt_pixel_data"
UNREADABLE_HEADER = "unreadable_header"
INCOMPLETE_HEADER = "incomplete_header"

# Why a series is not stacked (metrics/reports/nifti.json, nifti/series.csv).
REFUSAL_REASONS = (
    "single_slice",
    "mixed_matrix",
    "mixed_pixel_spacing",
    "inconsistent_orientation",
    "duplicate_positions",
    "uneven_spacing",
    "decode_failed",
)

# Header fields every kept image must have, with the check that makes them usable.
HEADER_FIELDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
)


class SeriesRefused(Exception):
    """A series that cannot be stacked without guessing; `reason` is in REFUSAL_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Skip pydicom's value validation (RSNA's ``ID_...`` UIDs fail it) and its warnings."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        settings.reading_validation_mode = previous


def image_id_from_path(path: str | os.PathLike) -> str:
    """The RSNA image ID of a file: its name without ``.dcm`` (what the label CSV uses)."""
    return Path(path).name.removesuffix(".dcm")


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes an uncompressed PixelData must hold for this header."""
    bits = int(ds.BitsAllocated)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    n_bits = int(ds.Rows) * int(ds.Columns) * samples * frames * bits
    return (n_bits + 7) // 8


def pixel_data_problem(ds: Dataset, file_size: int) -> str | None:
    """Why the PixelData of a header-only read cannot be whole, or None if it looks fine.

    Compares what the header promises with the element's declared length and with
    the bytes actually left in the file after the value's offset. Encapsulated
    (compressed) data has no fixed size: only its presence is checked.
    """
    if PIXEL_DATA_TAG not in ds:
        return "no PixelData element"
    element = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    declared = getattr(element, "length", None)
    offset = getattr(element, "value_tell", None)
    if declared is None or offset is None:  # read eagerly: only the value length is known
        declared = len(element.value or b"")
        offset = file_size - declared
    available = file_size - offset
    if declared == UNDEFINED_LENGTH:
        return None if available > 0 else "encapsulated PixelData is empty"
    expected = expected_pixel_bytes(ds)
    if declared < expected:
        return f"PixelData declares {declared} bytes, the header needs {expected}"
    if available < expected:
        return f"file holds {available} of {expected} PixelData bytes (truncated)"
    return None


def _floats(value, n: int, name: str) -> list[float]:
    values = [float(v) for v in (value if isinstance(value, Sequence) else [value])]
    if len(values) != n or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be {n} finite numbers, got {value!r}")
    return values


@dataclass(frozen=True)
class Geometry:
    """Where a slice lies: IPP (LPS mm), IOP, PixelSpacing (row, column) and matrix size."""

    ipp: tuple[float, ...]
    iop: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int

    @property
    def position(self) -> float:
        """IPP projected on the slice normal: the stacking order."""
        return volume.position_along_normal(self.ipp, self.iop)


def read_geometry(ds: Dataset) -> Geometry:
    """The slice geometry of a dataset; ValueError naming the field when it is unusable."""
    iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")
    if np.linalg.norm(np.cross(iop[:3], iop[3:])) < 0.5:
        raise ValueError(f"ImageOrientationPatient {iop} has parallel row and column cosines")
    spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing")
    if min(spacing) <= 0:
        raise ValueError(f"PixelSpacing {spacing} must be positive")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows < 1 or columns < 1:
        raise ValueError(f"matrix {rows}x{columns} is empty")
    return Geometry(
        ipp=tuple(_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient")),
        iop=tuple(iop),
        pixel_spacing=(spacing[0], spacing[1]),
        rows=rows,
        columns=columns,
    )


def read_header(path: str | os.PathLike) -> dict:
    """One image's header record for slices.csv; never raises for a bad file.

    Returns ``image_id, patient_id, study_uid, series_uid, position, reason, detail``;
    `reason` is empty for a usable image, else one of CORRUPT_PIXEL_DATA,
    UNREADABLE_HEADER, INCOMPLETE_HEADER, with `detail` saying what exactly.
    """
    record = {
        "image_id": image_id_from_path(path),
        "patient_id": "",
        "study_uid": "",
        "series_uid": "",
        "position": float("nan"),
        "reason": "",
        "detail": "",
    }
    try:
        file_size = os.path.getsize(path)
        with quiet_pydicom():
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except Exception as exc:  # any parse failure means the same thing here
        return {**record, "reason": UNREADABLE_HEADER, "detail": f"{type(exc).__name__}: {exc}"}
    with quiet_pydicom():
        missing = [name for name in HEADER_FIELDS if ds.get(name) in (None, "")]
        if missing:
            return {**record, "reason": INCOMPLETE_HEADER, "detail": f"missing {missing}"}
        try:
            geometry = read_geometry(ds)
            problem = pixel_data_problem(ds, file_size)
        except Exception as exc:
            return {**record, "reason": INCOMPLETE_HEADER, "detail": str(exc)}
        record.update(
            patient_id=str(ds.PatientID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            position=geometry.position,
        )
    if problem:
        record.update(reason=CORRUPT_PIXEL_DATA, detail=problem)
    return record


HEADER_COLUMNS = (
    "image_id",
    "patient_id",
    "study_uid",
    "series_uid",
    "position",
    "reason",
    "detail",
)


def read_headers(paths: Sequence[str | os.PathLike]) -> list[tuple]:
    """`read_header` over a chunk of files (the unit of parallel work for 752k files).

    Rows are tuples in HEADER_COLUMNS order: a fraction of the dicts' size to send
    back from the workers and to hold for the whole download.
    """
    return [tuple(read_header(p)[name] for name in HEADER_COLUMNS) for p in paths]


def needs_rsna_12bit_fix(ds: Dataset) -> bool:
    """The RSNA quirk: 12 bits stored, unsigned, and an intercept that is not a CT one."""
    return (
        int(ds.BitsStored) == 12
        and int(ds.PixelRepresentation) == 0
        and float(ds.get("RescaleIntercept", 0)) > -100
    )


def decode_hu(ds: Dataset) -> np.ndarray:
    """The slice in HU as int16 ``[row, col]``, RSNA 12-bit fix applied when it is needed.

    pydicom's `pixel_array` already honours PixelRepresentation and BitsStored; values
    are rounded and clipped to the int16 range, which holds every CT value.
    """
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"SamplesPerPixel {ds.SamplesPerPixel}: not a grey-scale CT image")
    stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"pixel array has shape {stored.shape}, expected one 2-D frame")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    if needs_rsna_12bit_fix(ds):
        values = stored.astype(np.int32) + 1000
        values[values >= 4096] -= 4096
        intercept = -1000.0
    else:
        values = stored.astype(np.int32)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept.is_integer():  # the usual CT case: stay in integers (fast)
        hu = values + int(intercept)
    else:
        hu = np.rint(values * slope + intercept)
    info = np.iinfo(np.int16)
    return np.clip(hu, info.min, info.max).astype(np.int16)


@dataclass
class SeriesVolume:
    """A stacked series: ``data[col, row, k]`` int16 HU, RAS affine, and what was done."""

    data: np.ndarray
    affine: np.ndarray
    image_ids: list[str]
    positions: list[float]
    ipps: list[list[float]]
    gantry_tilt_deg: float
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    n_12bit_fixed: int


def _read_full(path: Path) -> Dataset:
    try:
        with quiet_pydicom():
            return pydicom.dcmread(path)
    except Exception as exc:
        raise SeriesRefused("decode_failed", f"{path}: {type(exc).__name__}: {exc}") from exc


def _check_consistent(paths: Sequence[Path], geometries: Sequence[Geometry]) -> None:
    first = geometries[0]
    for path, geo in zip(paths, geometries, strict=True):
        if (geo.rows, geo.columns) != (first.rows, first.columns):
            raise SeriesRefused(
                "mixed_matrix",
                f"{path.name} is {geo.rows}x{geo.columns}, {paths[0].name} is {first.rows}x{first.columns}",
            )
        if not np.allclose(geo.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-5):
            raise SeriesRefused(
                "mixed_pixel_spacing",
                f"{path.name} has {geo.pixel_spacing}, {paths[0].name} {first.pixel_spacing}",
            )
        if not np.allclose(geo.iop, first.iop, atol=1e-4):
            raise SeriesRefused(
                "inconsistent_orientation",
                f"{path.name} has IOP {geo.iop}, {paths[0].name} {first.iop}",
            )


def _check_spacing(
    ids: Sequence[str], positions: np.ndarray, ipps: np.ndarray, tolerance: float
) -> np.ndarray:
    """The mean IPP step of sorted slices, after refusing duplicates and uneven gaps."""
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise SeriesRefused(
            "duplicate_positions",
            f"{ids[k]} and {ids[k + 1]} both lie at {positions[k]:.3f} mm along the normal",
        )
    step = volume.mean_slice_step(ipps)
    deviation = np.linalg.norm(np.diff(ipps, axis=0) - step, axis=1)
    worst = int(np.argmax(deviation))
    if deviation[worst] > tolerance * np.linalg.norm(step):
        raise SeriesRefused(
            "uneven_spacing",
            f"step {ids[worst]} -> {ids[worst + 1]} is {gaps[worst]:.3f} mm along the normal, "
            f"mean step {np.linalg.norm(step):.3f} mm (tolerance {tolerance:.0%}); "
            "a missing or extra slice?",
        )
    return step


def load_series(
    paths: Sequence[str | os.PathLike], *, spacing_tolerance: float = 0.1
) -> SeriesVolume:
    """Read, check, sort and stack the files of one series into an HU volume.

    Raises SeriesRefused when the slices disagree on matrix, pixel spacing or
    orientation, when two slices share a position, when consecutive IPP steps differ
    from their mean by more than `spacing_tolerance` of its length (a missing slice),
    when there is only one slice, or when a slice fails to decode.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise SeriesRefused("single_slice", f"{len(paths)} slice(s): no volume to stack")
    datasets = [_read_full(p) for p in paths]
    try:
        with quiet_pydicom():
            geometries = [read_geometry(ds) for ds in datasets]
    except ValueError as exc:
        raise SeriesRefused("decode_failed", str(exc)) from exc
    _check_consistent(paths, geometries)

    order = np.argsort([g.position for g in geometries], kind="stable")
    paths = [paths[i] for i in order]
    datasets = [datasets[i] for i in order]
    geometries = [geometries[i] for i in order]
    ids = [image_id_from_path(p) for p in paths]
    positions = np.array([g.position for g in geometries])
    ipps = np.array([g.ipp for g in geometries])
    step = _check_spacing(ids, positions, ipps, spacing_tolerance)

    images = []
    for path, ds in zip(paths, datasets, strict=True):
        try:
            with quiet_pydicom():
                images.append(decode_hu(ds))
        except Exception as exc:
            raise SeriesRefused("decode_failed", f"{path}: {type(exc).__name__}: {exc}") from exc

    first = geometries[0]
    normal = volume.slice_normal(first.iop)
    return SeriesVolume(
        data=volume.stack_slices(images),
        affine=volume.affine_ras(first.ipp, first.iop, first.pixel_spacing, step),
        image_ids=ids,
        positions=[float(p) for p in positions],
        ipps=ipps.tolist(),
        gantry_tilt_deg=volume.gantry_tilt_deg(first.iop, step),
        pixel_spacing=first.pixel_spacing,
        slice_spacing=float(abs(np.dot(step, normal))),
        n_12bit_fixed=sum(needs_rsna_12bit_fix(ds) for ds in datasets),
    )
