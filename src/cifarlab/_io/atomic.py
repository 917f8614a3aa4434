"""Atomic file writes: a reader sees the old file or the new one, never half of one; a full disk is one clear error."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class NoSpaceError(OSError):
    """A write failed for want of room (full disk, quota, file-size limit); `str()` is one line naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The new file is flushed to disk before it replaces the old one, so a crash leaves one or the other whole.

    Raises:
        NoSpaceError: if the disk (or a quota, or the file-size limit) left no room; the old file is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        code = _no_room(Path(tmp), error)
        Path(tmp).unlink(missing_ok=True)
        if code is not None:
            kept = f"; the {path.name} there before is intact" if path.exists() else ""
            raise NoSpaceError(code, f"cannot write {path}: {os.strerror(code)}{kept}") from None
        raise


def _new_temporary(path: Path) -> Path:
    """A new empty file beside `path`, with the mode a plain open() gives (0666 less the umask; mkstemp's is 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _no_room(tmp: Path, error: BaseException) -> int | None:
    """The errno when `error` came from a full disk (or quota, or file-size limit), else None.

    Writers such as torch.save report a failed write as a RuntimeError without the errno, so when the error
    does not say, a probe appends up to 1 MiB to the temporary file and reads the errno from its failure.
    """
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno if error.errno in _FULL else None
    if not isinstance(error, Exception) or not tmp.exists():
        return None
    try:
        with tmp.open("ab") as f:
            for _ in range(16):
                f.write(bytes(65536))
                f.flush()
            os.fsync(f.fileno())
    except OSError as probe:
        return probe.errno if probe.errno in _FULL else None
    return None


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let `writer(tmp_path)` write the file, then move it onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
