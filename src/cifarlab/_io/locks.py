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


@contextmanager
def waiting_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if missing) while the block runs, waiting for it if need be.

    For a check-then-act that several processes may run at once (e.g. failing a study's orphaned trials): the
    second waits, then sees what the first did. Advisory (flock), gone with the process; nothing is locked where
    flock does not exist (Windows).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
