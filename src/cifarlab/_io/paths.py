"""Paths a user gives, checked before any work: a file to write must land in a folder that exists and is writable."""

from __future__ import annotations

import tempfile
from pathlib import Path


def write_error(folder: Path) -> str | None:
    """Why a file cannot be written in `folder` (an existing folder), or None when it can.

    A real write, not the mode bits: a read-only or virtual filesystem (/proc) only shows on a write.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return str(error.strerror or error)


def writable_file(path: str | Path, flag: str) -> Path:
    """`path` as a file that can be written, or a one-line ValueError naming `flag` and the path as given.

    Checks, up front, what would otherwise fail at the end with a temporary file's name or a bare errno: that the
    parent is an existing folder (not a file), that the path itself is not a folder, and that the folder is writable.

    Raises:
        ValueError: when the file could not be written there.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{flag} {path}: {folder} is a file, not a folder")
            break
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {parent} does not exist")
    if (error := write_error(parent)) is not None:
        raise ValueError(f"{flag} {path}: cannot write in {parent} ({error})")
    return path
