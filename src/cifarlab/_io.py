"""Atomic file writes (a reader sees the old file or the new one, never half of one) and checked cache files."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

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
        _stall_for_tests(path, Path(tmp))
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


def _stall_for_tests(path: Path, tmp: Path) -> None:
    """Test-only hook: CIFARLAB_TEST_STALL_WRITE=NAME:BYTES:WHEN freezes a write of a file named NAME.

    WHEN is 'replace' (the write that replaces an existing NAME) or 'new' (the first one). The temporary file is cut
    to BYTES, one line goes to stderr, and the process sleeps until it is killed, as if killed in the middle of the
    write (tests send SIGKILL then).
    """
    spec = os.environ.get("CIFARLAB_TEST_STALL_WRITE")
    if not spec:
        return
    name, size, when = spec.rsplit(":", 2)
    if path.name != name or path.exists() != (when == "replace"):
        return
    os.truncate(tmp, min(int(size), tmp.stat().st_size))
    os.write(2, f"cifarlab-test: stalled writing {path} at byte {size}\n".encode())
    while True:
        time.sleep(60)


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


CACHE_FORMAT = "cifarlab-cache"
_NPZ_META = "__cifarlab__"  # the npz entry that holds a cache file's metadata (JSON, a 0-d str array)


def digest_arrays(arrays: Mapping[str, Any]) -> str:
    """sha256 of named arrays (numpy arrays or torch tensors): each name, dtype, shape and byte, in name order.

    The digest covers the content, not the file, so it can be stored inside the file it checks (cache and
    checkpoint metadata) and recomputed from what was read back.
    """
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        hasher.update(name.encode() + b"\0")
        _digest_array(hasher, arrays[name])
    return hasher.hexdigest()


def _digest_array(hasher: Any, value: Any) -> None:
    """Feed one array's dtype, shape and bytes to `hasher`."""
    if hasattr(value, "detach"):  # a torch tensor; torch is imported only then, so numpy-only callers stay light
        import torch

        flat = value.detach().to("cpu").contiguous().reshape(-1)
        hasher.update(f"{flat.dtype}{tuple(value.shape)}".encode())
        hasher.update(memoryview(flat.view(torch.uint8).numpy()))
        return
    array = np.asarray(value)
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))


def write_cache(path: str | Path, arrays: Mapping[str, np.ndarray], key: Mapping[str, Any]) -> None:
    """Write a cache file atomically: the arrays, plus metadata holding `key` and the arrays' sha256.

    `.npz` files keep the metadata in an extra entry, `.safetensors` files in their header. `read_cache`
    checks both before it trusts the file.

    Raises:
        OSError: if the file cannot be written (nothing is left behind).
    """
    path = Path(path)
    meta = json.dumps({"format": CACHE_FORMAT, "key": dict(key), "sha256": digest_arrays(arrays)}, sort_keys=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with tmp.open("wb") as f:
                np.savez(f, **arrays, **{_NPZ_META: np.array(meta)})  # uncompressed: a hit costs a read only
        else:
            from safetensors.numpy import save_file

            save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, str(tmp), metadata={
                "cifarlab": meta})  # fmt: skip


def read_cache(
    path: str | Path,
    key: Mapping[str, Any],
    *,
    check: Callable[[dict[str, np.ndarray]], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file written by `write_cache`, or None when it is missing or cannot be trusted.

    A file that is unreadable (truncated, not the format), carries no metadata, was built for another key
    (stale), or whose arrays no longer match their checksum (a flipped bit, a partial write) is deleted, and
    one line saying which and why goes to `report` (default: a warning), so the caller rebuilds it. A file
    that is used gets its modification time refreshed: `cifarlab cache --prune` reads it as the last use.

    Args:
        path: the cache file (`.npz` or `.safetensors`).
        key: what the file must have been built from, as given to `write_cache`.
        check: the caller's own test of the arrays (shapes, dtypes); it raises ValueError to reject them.
        report: receives the one-line message when a file is rejected.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        arrays, meta = _load_cache_file(path)
        problem = _cache_problem(arrays, meta, key)
        if problem is None and check is not None:
            check(arrays)
    except Exception as error:  # a damaged or foreign file fails in many ways (zip, header, JSON, key errors)
        problem = ("unreadable", f"{type(error).__name__}: {error}")
    if problem is not None:
        path.unlink(missing_ok=True)
        message = f"deleting {problem[0]} cache file {path} ({problem[1]}); it is being rebuilt"
        message = " ".join(message.split())  # one line, whatever the error said
        if report is None:
            warnings.warn(message, stacklevel=2)
        else:
            report(message)
        return None
    try:
        os.utime(path)  # last use, for pruning; a read-only cache is still usable
    except OSError:
        pass
    return arrays


def read_cache_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata `write_cache` stored in a cache file (format, key, sha256), without reading the arrays.

    Returns:
        The metadata, or None when the file is unreadable or has none (written by an older cifarlab).
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with path.open("rb") as f, np.load(f, allow_pickle=False) as npz:  # members load lazily
                raw = str(npz[_NPZ_META][()]) if _NPZ_META in npz.files else None
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                raw = (f.metadata() or {}).get("cifarlab")
        meta = json.loads(raw) if raw is not None else None
    except Exception:  # unreadable: the caller treats it as a file without metadata
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def _load_cache_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """All arrays of a cache file and its metadata (None when it has none)."""
    if path.suffix == ".npz":
        with path.open("rb") as f, np.load(f, allow_pickle=False) as npz:  # our handle: closed even when np.load fails
            arrays = {name: npz[name] for name in npz.files}
        raw = arrays.pop(_NPZ_META, None)
        meta = str(raw[()]) if raw is not None else None
    else:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(str(path), framework="numpy") as f:
            meta = (f.metadata() or {}).get("cifarlab")
        arrays = load_file(str(path))
    return arrays, json.loads(meta) if meta is not None else None


def _cache_problem(
    arrays: dict[str, np.ndarray], meta: dict[str, Any] | None, key: Mapping[str, Any]
) -> tuple[str, str] | None:
    """Why a cache file's content cannot be trusted, as (adjective, detail), or None."""
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return "unchecked", "it has no checksum: written by an older cifarlab or another program"
    expected = json.loads(json.dumps(dict(key)))  # as the JSON metadata holds it (tuples become lists)
    saved = meta.get("key") if isinstance(meta.get("key"), dict) else {}
    if saved != expected:
        changed = sorted(name for name in {*saved, *expected} if saved.get(name) != expected.get(name))
        return "stale", f"built from other inputs: {', '.join(changed)} differ"
    if meta.get("sha256") != digest_arrays(arrays):
        return "damaged", "checksum mismatch: bits changed on disk or the file was cut short"
    return None


def error_gist(error: BaseException) -> str:
    """An exception as 'Type: first line', short; torch's weights-only errors keep their own reason, not advice."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True): a dozen lines of advice, then the reason
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no detail'}"[:300]
