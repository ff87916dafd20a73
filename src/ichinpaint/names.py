"""Identifiers from untrusted input (DICOM headers, CSVs, file names) that become paths.

Every stage that names a file or a directory after a value it read (a series UID, an
image ID) checks it here first, so a crafted header such as
``SeriesInstanceUID = ../../tmp/x/evil`` can never write outside the output tree.
The rule is a whitelist, not an escape: a value that fails it is refused (the row is
excluded with reason ``unsafe_identifier``), never rewritten into something else.

- a **series or study UID** is a DICOM UID (digits and dots, at most 64 characters)
  or an RSNA-style ID (``ID_`` followed by letters and digits);
- an **image ID** (the file name without ``.dcm``) is a *safe name*: 1-128 ASCII
  letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit and not
  ending with a dot. That holds every DICOM UID and RSNA ID, and no path separator,
  ``..``, absolute path, space, control or non-ASCII character.

Patient IDs never become part of a path in this project, so they are not restricted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

UNSAFE_IDENTIFIER = "unsafe_identifier"
DICOM_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
RSNA_ID = re.compile(r"ID_[0-9A-Za-z]+")
SAFE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
MAX_UID_LENGTH = 64
MAX_RSNA_ID_LENGTH = 128


class UnsafeIdentifier(ValueError):
    """A header or CSV value that cannot be used as a file or directory name."""


def printable(value: object) -> str:
    """A value as one line of ASCII, for messages and tables (undecodable bytes escaped)."""
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return ascii(text)[1:-1]


def is_series_uid(value: object) -> bool:
    """A DICOM UID (digits and dots) or an RSNA-style ``ID_<alphanumeric>``."""
    if not isinstance(value, str):
        return False
    if DICOM_UID.fullmatch(value):
        return len(value) <= MAX_UID_LENGTH
    return bool(RSNA_ID.fullmatch(value)) and len(value) <= MAX_RSNA_ID_LENGTH


def is_safe_name(value: object) -> bool:
    """One path component made only of ``[A-Za-z0-9._-]``, see the module rule."""
    return isinstance(value, str) and bool(SAFE_NAME.fullmatch(value))


def uid_problem(value: object, what: str = "SeriesInstanceUID") -> str:
    """Why `value` cannot name a series' files, or ``""`` when it can."""
    if is_series_uid(value):
        return ""
    return f"{what} {printable(value)!r} is neither a DICOM UID nor an RSNA ID_<alphanumeric>"


def name_problem(value: object, what: str = "image ID") -> str:
    """Why `value` cannot be a file name, or ``""`` when it can."""
    if is_safe_name(value):
        return ""
    return f"{what} {printable(value)!r} is not a safe file name ([A-Za-z0-9._-], 1-128 characters)"


def check_series_uid(value: object, what: str = "series UID") -> str:
    """`value` if it is a valid series UID, else UnsafeIdentifier naming it."""
    problem = uid_problem(value, what)
    if problem:
        raise UnsafeIdentifier(problem)
    return str(value)


def check_name(value: object, what: str = "image ID") -> str:
    """`value` if it is a safe file name, else UnsafeIdentifier naming it."""
    problem = name_problem(value, what)
    if problem:
        raise UnsafeIdentifier(problem)
    return str(value)


def child(directory: str | os.PathLike, name: str, suffix: str = "", what: str = "name") -> Path:
    """``directory / (name + suffix)`` after checking that `name` is a safe name.

    The check is the whitelist above; the resolved-path comparison is a second guard
    for callers that pass a name from somewhere new.
    """
    check_name(name, what)
    directory = Path(directory)
    path = directory / f"{name}{suffix}"
    if path.resolve().parent != directory.resolve():
        raise UnsafeIdentifier(f"{what} {printable(name)!r} leads outside {directory}")
    return path


def check_table_ids(
    frame, source: str | os.PathLike, series: str = "series_uid", image: str = "image_id"
) -> None:
    """UnsafeIdentifier naming `source` when a series UID or image ID of a table is unsafe.

    For the manifests that later stages read (slices.csv): they name files after these
    columns, and a CSV can be edited by hand.
    """
    for column, problem_of in ((series, uid_problem), (image, name_problem)):
        if column not in frame.columns:
            continue
        values = frame[column].dropna().astype(str).unique()
        bad = [v for v in values if problem_of(v, column)]
        if bad:
            shown = ", ".join(repr(printable(v)) for v in bad[:3])
            raise UnsafeIdentifier(
                f"{source}: {len(bad)} {column} value(s) cannot name a file: {shown}"
            )
