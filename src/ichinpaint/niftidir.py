"""Reading a directory of per-series NIfTI volumes (the nifti and mask stages' outputs)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

from ichinpaint import names

NIFTI_SUFFIX = ".nii.gz"


def series_uid_of(path: Path) -> str:
    """The series UID a volume is named after; UnsafeIdentifier for a name that is not one."""
    return names.check_series_uid(path.name[: -len(NIFTI_SUFFIX)], f"volume {path.name}")


def list_volumes(nifti_dir: str | Path) -> list[Path]:
    """The HU volumes of a nifti-stage directory, sorted by series UID."""
    nifti_dir = Path(nifti_dir)
    if not nifti_dir.is_dir():
        raise FileNotFoundError(f"nifti directory not found: {nifti_dir}")
    return sorted(nifti_dir.glob(f"*{NIFTI_SUFFIX}"))


def load_volume(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI, turning any reader failure into an error that names the file."""
    try:
        image = nib.load(path)
        if len(image.shape) != 3:
            raise ValueError(f"expected a 3-D volume, got shape {image.shape}")
        return image
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot use this NIfTI volume ({error})") from error
