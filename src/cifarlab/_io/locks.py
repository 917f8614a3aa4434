"""Directory locks: one cifarlab process at a time in a directory (e.g. a run directory)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked_dir(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on directory `path` while the block runs (e.g. one process per run directory).

    The lock is advisory (flock) and goes with the process, so a crash never leaves it held. Where flock does
    not exist (Windows) nothing is locked.

    Raises:
        ValueError: if another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{path} is in use by another cifarlab process (a run still training?)") from None
        yield
    finally:
        os.close(fd)
