"""DICOM reading for RSNA-layout CT: headers, pixel-data integrity, HU decoding, series stacking.

Three jobs, each shaped by the real RSNA download (752k files):

- `read_header`: the few header fields the pipeline needs, without reading pixels, plus
  cheap checks that the image can be decoded to HU: a CT image (Modality), grey-scale
  and single-frame, a usable rescale (RescaleSlope/RescaleIntercept present, finite,
  reaching the physical HU range), PixelData that matches the header's geometry
  (declared and available bytes against Rows x Columns x samples x BitsAllocated / 8,
  chroma subsampling included) and a decoder for its transfer syntax. A file failing
  one of them is excluded with a reason and a detail before anything decodes it.
- `decode_hu`: stored values to HU, including the RSNA 12-bit fix (some files say
  BitsStored 12, PixelRepresentation 0 and carry values that only make sense after
  ``x = stored + 1000; x[x >= 4096] -= 4096; HU = x * slope - 1000``). It repeats the
  header checks (callers may skip `read_header`) and never clips: HU that do not fit
  int16 are an error. `hu_range_problem` flags HU far outside the physical range.
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
import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset

from ichinpaint import names, volume

PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# Elements larger than this are not read while looking at headers; PixelData of any
# real image is larger, so it stays on disk and only its length and offset are seen.
DEFER_BYTES = 1024

# Why an image is left out at the header stage (slices.csv `reason`; `detail` says more).
CORRUPT_PIXEL_DATA = "corrupt_pixel_data"  # PixelData missing, short or truncated
UNREADABLE_HEADER = "unreadable_header"  # not DICOM, or the parser failed
INCOMPLETE_HEADER = "incomplete_header"  # a required tag missing or unusable
NOT_A_FILE = "not_a_file"  # a directory, a broken or looping link named *.dcm
NOT_CT = "not_ct"  # Modality is not CT
UNSUPPORTED_IMAGE = "unsupported_image"  # colour, multi-frame, odd bit depth
UNUSABLE_RESCALE = "unusable_rescale"  # RescaleSlope/Intercept missing, NaN, absurd
GEOMETRY_MISMATCH = "geometry_mismatch"  # PixelData larger than Rows x Columns allow
NO_DECODER = "no_decoder"  # compressed with a transfer syntax nothing here decodes
UNSAFE_IDENTIFIER = names.UNSAFE_IDENTIFIER  # an ID that cannot name a file
HEADER_REASONS = (
    CORRUPT_PIXEL_DATA,
    UNREADABLE_HEADER,
    INCOMPLETE_HEADER,
    NOT_A_FILE,
    NOT_CT,
    UNSUPPORTED_IMAGE,
    UNUSABLE_RESCALE,
    GEOMETRY_MISMATCH,
    NO_DECODER,
    UNSAFE_IDENTIFIER,
)

# HU a real CT voxel can hold (air about -1000, dense bone and contrast below 4000).
# Values beyond are flagged (metal, or a wrong rescale), never clipped.
HU_PHYSICAL_RANGE = (-1100.0, 4000.0)
CT_SOP_CLASSES = frozenset(
    {
        pydicom.uid.CTImageStorage,
        pydicom.uid.EnhancedCTImageStorage,
        pydicom.uid.LegacyConvertedEnhancedCTImageStorage,
    }
)
GREY_SCALE = ("MONOCHROME1", "MONOCHROME2")

# Why a series is not stacked (metrics/reports/nifti.json, nifti/series.csv).
REFUSAL_REASONS = (
    "single_slice",
    "mixed_matrix",
    "mixed_pixel_spacing",
    "inconsistent_orientation",
    "duplicate_positions",
    "uneven_spacing",
    "decode_failed",
    UNSAFE_IDENTIFIER,
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
    """Bytes an uncompressed PixelData must hold for this header.

    Packed 1-bit data rounds up to whole bytes; YBR_FULL_422 stores two samples per
    pixel instead of three (chroma subsampled), as DICOM PS3.5 8.2.1 says.
    """
    bits = int(ds.BitsAllocated)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    n_values = int(ds.Rows) * int(ds.Columns) * samples * frames
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        n_values = n_values // 3 * 2
    return (n_values * bits + 7) // 8


def transfer_syntax(ds: Dataset) -> pydicom.uid.UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return pydicom.uid.UID(str(uid)) if uid else pydicom.uid.ImplicitVRLittleEndian


def decoder_problem(ds: Dataset) -> str | None:
    """Why no installed plugin decodes this transfer syntax, or None."""
    from pydicom.pixels import get_decoder

    uid = transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"transfer syntax {uid} ({uid.name}) has no pixel-data decoder"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        return f"transfer syntax {uid} ({uid.name}) needs a decoder plugin: {missing}"
    return None


def pixel_data_problem(ds: Dataset, file_size: int, path: str | os.PathLike | None = None):
    """Why the PixelData of a header-only read cannot be decoded, or None if it looks fine.

    Returns ``(reason, detail)``. Compares what the header promises with the element's
    declared length and with the bytes actually left in the file after the value's
    offset. Encapsulated (compressed) data has no fixed size: its presence and a
    decoder for its transfer syntax are checked. A deflated file's offsets refer to
    the inflated stream, so its PixelData is read to be measured.
    """
    if PIXEL_DATA_TAG not in ds:
        return CORRUPT_PIXEL_DATA, "no PixelData element"
    element = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    declared = getattr(element, "length", None)
    offset = getattr(element, "value_tell", None)
    if transfer_syntax(ds) == pydicom.uid.DeflatedExplicitVRLittleEndian and path is not None:
        try:
            with quiet_pydicom():
                declared = len(pydicom.dcmread(path).PixelData or b"")
        except Exception as exc:
            return CORRUPT_PIXEL_DATA, f"deflated data set does not inflate: {_one_line(exc)}"
        offset = file_size - declared
    elif declared is None or offset is None:  # read eagerly: only the value length is known
        declared = len(element.value or b"")
        offset = file_size - declared
    available = file_size - offset
    if declared == UNDEFINED_LENGTH or transfer_syntax(ds).is_compressed:
        if available <= 0:
            return CORRUPT_PIXEL_DATA, "encapsulated PixelData is empty"
        problem = decoder_problem(ds)
        return (NO_DECODER, problem) if problem else None
    expected = expected_pixel_bytes(ds)
    if declared < expected:
        return (
            CORRUPT_PIXEL_DATA,
            f"PixelData declares {declared} bytes, the header needs {expected}",
        )
    if available < expected:
        return (
            CORRUPT_PIXEL_DATA,
            f"file holds {available} of {expected} PixelData bytes (truncated)",
        )
    if declared > expected + 1:  # one byte of padding makes an odd length even
        return GEOMETRY_MISMATCH, (
            f"PixelData holds {declared} bytes, Rows x Columns {int(ds.Rows)}x{int(ds.Columns)} "
            f"({int(ds.BitsAllocated)} bits) need {expected}: header and pixels disagree"
        )
    return None


def image_kind_problem(ds: Dataset):
    """``(reason, detail)`` when the image is not a grey-scale single-frame CT, else None."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "CT":
        sop = str(ds.get("SOPClassUID", "") or "")
        if modality or sop not in CT_SOP_CLASSES:
            shown = names.printable(modality) if modality else "missing"
            return NOT_CT, f"Modality {shown} (SOPClassUID {names.printable(sop) or 'missing'})"
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "").strip()
    if samples != 1 or photometric not in GREY_SCALE:
        return UNSUPPORTED_IMAGE, f"SamplesPerPixel {samples}, {photometric}: not grey-scale"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        return UNSUPPORTED_IMAGE, f"{frames} frames: one slice per file expected"
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32):
        return UNSUPPORTED_IMAGE, f"BitsAllocated {bits}"
    stored = int(ds.get("BitsStored", bits) or bits)
    if not 1 <= stored <= bits:
        return UNSUPPORTED_IMAGE, f"BitsStored {stored} outside 1..BitsAllocated {bits}"
    representation = int(ds.get("PixelRepresentation", 0) or 0)
    if representation not in (0, 1):
        return UNSUPPORTED_IMAGE, f"PixelRepresentation {representation}"
    return None


def stored_value_range(ds: Dataset) -> tuple[int, int]:
    """The smallest and largest value BitsStored and PixelRepresentation allow."""
    bits = int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def rescale(ds: Dataset) -> tuple[float, float]:
    """``(slope, intercept)``; ValueError naming the tag when either is unusable.

    A CT image must carry both (PS3.3 C.11.1, type 1): a missing intercept read as 0
    would shift every pixel by ~1024 HU, so it is refused, not defaulted.
    """
    values = []
    for name in ("RescaleSlope", "RescaleIntercept"):
        raw = ds.get(name)
        if raw is None or str(raw).strip() == "":
            raise ValueError(f"{name} missing")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{name} {names.printable(raw)!r} is not a number") from None
        if not np.isfinite(value):
            raise ValueError(f"{name} is {value}")
        values.append(value)
    slope, intercept = values
    if slope <= 0:
        raise ValueError(f"RescaleSlope {slope:g} must be positive")
    low, high = stored_value_range(ds)
    hu_low, hu_high = low * slope + intercept, high * slope + intercept
    if hu_high < HU_PHYSICAL_RANGE[0] or hu_low > HU_PHYSICAL_RANGE[1]:
        raise ValueError(
            f"RescaleSlope {slope:g} and RescaleIntercept {intercept:g} map every stored value "
            f"({low}..{high}) to {hu_low:g}..{hu_high:g} HU, outside the physical range "
            f"{HU_PHYSICAL_RANGE[0]:g}..{HU_PHYSICAL_RANGE[1]:g}"
        )
    return slope, intercept


def rescale_problem(ds: Dataset):
    try:
        rescale(ds)
    except (ValueError, TypeError) as exc:
        return UNUSABLE_RESCALE, str(exc)
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


def not_a_file_problem(path: str | os.PathLike) -> str | None:
    """Why a ``*.dcm`` directory entry is not a readable regular file, or None."""
    if os.path.isfile(path):  # follows links; False for a loop or a dangling link
        return None
    if os.path.isdir(path):
        return "a directory named like a DICOM file"
    if os.path.islink(path):
        return "a symbolic link that loops or points nowhere"
    return "not a regular file"


def _one_line(exc: BaseException) -> str:
    return names.printable(f"{type(exc).__name__}: {exc}")


def read_header(path: str | os.PathLike) -> dict:
    """One image's header record for slices.csv; never raises for a bad file.

    Returns ``image_id, patient_id, study_uid, series_uid, position, reason, detail``;
    `reason` is empty for a usable image, else one of HEADER_REASONS, with `detail`
    saying what exactly (which tag, how many bytes, which modality). Checks run in
    the order of HEADER_REASONS' meaning: the file, its parse, the required tags, safe
    identifiers, the kind of image, its PixelData, its rescale.
    """
    raw_id = image_id_from_path(path)
    record = {
        "image_id": names.printable(raw_id),
        "patient_id": "",
        "study_uid": "",
        "series_uid": "",
        "position": float("nan"),
        "reason": "",
        "detail": "",
    }
    problem = names.name_problem(raw_id, "file name")
    if problem:
        return {**record, "reason": UNSAFE_IDENTIFIER, "detail": problem}
    problem = not_a_file_problem(path)
    if problem:
        return {**record, "reason": NOT_A_FILE, "detail": problem}
    try:
        file_size = os.path.getsize(path)
        with quiet_pydicom():
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except Exception as exc:  # any parse failure means the same thing here
        return {**record, "reason": UNREADABLE_HEADER, "detail": _one_line(exc)}
    with quiet_pydicom():
        try:
            missing = [name for name in HEADER_FIELDS if ds.get(name) in (None, "")]
        except Exception as exc:  # a tag whose value cannot be parsed
            return {**record, "reason": INCOMPLETE_HEADER, "detail": _one_line(exc)}
        if missing:
            return {**record, "reason": INCOMPLETE_HEADER, "detail": f"missing {missing}"}
        for name in ("SeriesInstanceUID", "StudyInstanceUID"):
            problem = names.uid_problem(str(ds.get(name)), name)
            if problem:
                return {**record, "reason": UNSAFE_IDENTIFIER, "detail": problem}
        try:
            geometry = read_geometry(ds)
        except Exception as exc:
            return {**record, "reason": INCOMPLETE_HEADER, "detail": names.printable(exc)}
        record.update(
            patient_id=names.printable(ds.PatientID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            position=geometry.position,
        )
        try:
            found = (
                image_kind_problem(ds)
                or pixel_data_problem(ds, file_size, path)
                or rescale_problem(ds)
            )
        except Exception as exc:  # a malformed value in one of the tags checked
            found = (INCOMPLETE_HEADER, _one_line(exc))
    if found:
        record.update(reason=found[0], detail=found[1])
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
    """The RSNA quirk: a CT image, 12 bits stored, unsigned, and an intercept that is not a CT one.

    Only CT: on MR or CR files the same bit layout is ordinary and the "fix" would
    change values by thousands.
    """
    intercept = ds.get("RescaleIntercept")
    if intercept is None or str(intercept).strip() == "":
        return False
    return (
        int(ds.BitsStored) == 12
        and int(ds.PixelRepresentation) == 0
        and float(intercept) > -100
        and image_kind_problem(ds) is None
    )


class HUDecodeError(ValueError):
    """A slice that cannot be turned into HU without guessing; `reason` as in HEADER_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_hu(ds: Dataset) -> np.ndarray:
    """The slice in HU as int16 ``[row, col]``, RSNA 12-bit fix applied when it is needed.

    pydicom's `pixel_array` already honours PixelRepresentation and BitsStored. Refuses
    (HUDecodeError) a non-CT or colour image, a missing or unusable rescale, a pixel
    array whose shape is not Rows x Columns, and HU outside the int16 range: nothing is
    clipped or defaulted silently.
    """
    problem = image_kind_problem(ds) or rescale_problem(ds)
    if problem:
        raise HUDecodeError(*problem)
    slope, intercept = rescale(ds)
    stored = ds.pixel_array
    rows, columns = int(ds.Rows), int(ds.Columns)
    if stored.shape != (rows, columns):
        raise HUDecodeError(
            GEOMETRY_MISMATCH,
            f"pixel array has shape {stored.shape}, Rows x Columns say ({rows}, {columns})",
        )
    values = stored.astype(np.int64)
    if needs_rsna_12bit_fix(ds):
        values = values + 1000
        values[values >= 4096] -= 4096
        intercept = -1000.0
    if slope == 1 and intercept.is_integer():  # the usual CT case: stay in integers (fast)
        hu = values + int(intercept)
    else:
        hu = np.rint(values * slope + intercept)
    info = np.iinfo(np.int16)
    low, high = hu.min(), hu.max()
    if low < info.min or high > info.max:
        raise HUDecodeError(
            UNUSABLE_RESCALE,
            f"HU {low:g}..{high:g} do not fit int16 (slope {slope:g}, intercept {intercept:g})",
        )
    return hu.astype(np.int16)


def hu_range_problem(hu: np.ndarray) -> str:
    """Why a decoded slice looks wrong (HU far outside HU_PHYSICAL_RANGE), or ``""``.

    Values below the range that all share one value are the scanner's padding outside
    the reconstruction circle (-2000, -3024, ...) and are not flagged.
    """
    low, high = HU_PHYSICAL_RANGE
    if hu.size == 0:
        return ""
    h_min, h_max = int(hu.min()), int(hu.max())
    problems = []
    if h_max > high:
        problems.append(f"{int((hu > high).sum())} px above {high:g} HU (max {h_max})")
    if h_min < low:
        below = hu[hu < low]
        if h_min != int(below.max()):  # not one constant padding value
            problems.append(f"{below.size} px below {low:g} HU (min {h_min})")
    return "; ".join(problems)


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
    hu_flagged: dict[str, str] = dataclasses.field(default_factory=dict)
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # edge slices not decoded


def _read_full(path: Path) -> Dataset:
    try:
        with quiet_pydicom():
            return pydicom.dcmread(path)
    except Exception as exc:
        raise SeriesRefused("decode_failed", f"{path.name}: {_one_line(exc)}") from exc


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
    when there is only one slice, or when a slice inside the stack fails to decode.
    Slices at the top or bottom that fail to decode are left out and listed in
    ``dropped`` (the rest stays evenly spaced; nothing is guessed).
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

    images, flagged, failed = [], {}, {}
    for path, ds in zip(paths, datasets, strict=True):
        try:
            with quiet_pydicom():
                images.append(decode_hu(ds))
        except Exception as exc:
            images.append(None)
            failed[path.name] = _one_line(exc)
            continue
        problem = hu_range_problem(images[-1])
        if problem:
            flagged[image_id_from_path(path)] = problem
    dropped = {}
    if failed:
        keep = _edge_drop(images, failed)
        dropped = {ids[i]: failed[paths[i].name] for i in range(len(paths)) if i not in keep}
        paths, datasets, geometries, ids, images = (
            [seq[i] for i in keep] for seq in (paths, datasets, geometries, ids, images)
        )
        positions, ipps = positions[keep], ipps[keep]
        step = _check_spacing(ids, positions, ipps, spacing_tolerance)

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
        hu_flagged=flagged,
        dropped=dropped,
    )


def _edge_drop(images: list, failed: dict[str, str]) -> list[int]:
    """Indices of the slices to keep when some failed to decode, or SeriesRefused.

    Slices that fail at the top or bottom of the stack leave an evenly spaced series
    behind: it is stacked without them and they are recorded (``dropped``). A failure
    inside the stack would leave a gap that could only be filled by guessing, so the
    series is refused, naming the file.
    """
    keep = [i for i, image in enumerate(images) if image is not None]
    inner = bool(keep) and keep == list(range(keep[0], keep[-1] + 1))
    if len(keep) < 2 or not inner:
        name, why = next(iter(failed.items()))
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        where = "leaving fewer than 2 slices" if len(keep) < 2 else "inside the stack"
        raise SeriesRefused("decode_failed", f"{name}: {why}{more}; {where}")
    return keep
