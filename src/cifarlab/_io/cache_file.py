"""Checked cache files: arrays saved with the key they were built from and their checksum, trusted only if both hold."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab._io.atomic import atomic_path
from cifarlab._io.digest import digest_arrays

CACHE_FORMAT = "cifarlab-cache"
_NPZ_META = "__cifarlab__"  # the npz entry that holds a cache file's metadata (JSON, a 0-d str array)


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
