"""What the cache folder holds, and pruning it (`cifarlab cache [--prune]`).

The cache folder (`$CIFARLAB_HOME`, default `~/.cache/cifarlab`) holds downloads and caches derived from them:

- `cifar10/`: the CIFAR-10 archive (a download) and its parsed arrays (`*.npz`, a cache),
- `folders/`: decoded image folders (`*.npz`, a cache),
- `features/`: backbone features of frozen transfer runs (`*.safetensors`, a cache),
- `weights/`: published pretrained weights (downloads).

Pruning deletes only what is cheap to make again. A cache file goes when it has not been used for
`older_than_days` (every cache hit refreshes its modification time, which is what "used" means here), when its
image folder no longer exists, or when it carries no cifarlab checksum (an older cifarlab wrote it, or it is
unreadable: it would be rebuilt on its next use anyway). Temporary files that an interrupted write left behind
go once they are an hour old. Downloads and partial downloads (`*.part`, which a new download resumes) are
never pruned: delete them by hand if you must.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from cifarlab._download import cache_home
from cifarlab._io.cache_file import read_cache_meta

CACHE_KINDS = ("cifar10", "folders", "features", "weights")
_CACHE_SUFFIXES = {"cifar10": ".npz", "folders": ".npz", "features": ".safetensors"}  # derived, prunable
_TEMP_GRACE_S = 3600  # a temporary file younger than this may be a write in progress (another process)
_DAY_S = 86400


@dataclass(frozen=True)
class CacheEntry:
    """One file in the cache folder."""

    path: Path
    kind: str  # a CACHE_KINDS name, or 'other'
    role: str  # 'cache' (derived, prunable), 'download', 'partial download' or 'temporary'
    size: int  # bytes
    last_used: float  # modification time (refreshed on every cache hit), seconds since the epoch


@dataclass(frozen=True)
class KindUsage:
    """The files of one kind: how many, how big, and when one was last used."""

    kind: str
    files: int
    size: int
    last_used: float | None


def scan_cache(root: str | Path | None = None) -> list[CacheEntry]:
    """Every file under the cache folder, classified.

    Args:
        root: the cache folder; None = `$CIFARLAB_HOME` or `~/.cache/cifarlab`.
    """
    root = Path(root) if root is not None else cache_home()
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(root)
        kind = relative.parts[0] if len(relative.parts) > 1 and relative.parts[0] in CACHE_KINDS else "other"
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            role = "temporary"  # `_io.atomic.atomic_path`'s '.<name>.<random>.tmp'
        elif path.name.endswith(".part"):
            role = "partial download"
        elif kind in _CACHE_SUFFIXES and path.suffix == _CACHE_SUFFIXES[kind]:
            role = "cache"
        else:
            role = "download"
        stat = path.stat()
        entries.append(CacheEntry(path, kind, role, stat.st_size, stat.st_mtime))
    return entries


def cache_usage(entries: list[CacheEntry]) -> list[KindUsage]:
    """Files, bytes and last use per kind, in CACHE_KINDS order (then 'other'), kinds without files included."""
    usage = []
    for kind in (*CACHE_KINDS, "other"):
        mine = [entry for entry in entries if entry.kind == kind]
        if mine or kind != "other":
            last = max((entry.last_used for entry in mine), default=None)
            usage.append(KindUsage(kind, len(mine), sum(entry.size for entry in mine), last))
    return usage


def prune_reason(entry: CacheEntry, older_than_days: float, now: float) -> str | None:
    """Why `prune_cache` deletes `entry`, or None when it stays (see the module docstring for the rule)."""
    age_s = now - entry.last_used
    if entry.role == "temporary":
        return "left by an interrupted write" if age_s > _TEMP_GRACE_S else None
    if entry.role != "cache":
        return None
    if age_s > older_than_days * _DAY_S:
        return f"not used for {age_s / _DAY_S:.0f} days"
    meta = read_cache_meta(entry.path)
    if meta is None:
        return "no cifarlab checksum (older cifarlab, or unreadable)"
    folder = meta.get("key", {}).get("root") if entry.kind == "folders" else None
    if folder is not None and not Path(folder).is_dir():
        return f"its image folder {folder} is gone"
    return None


def prune_cache(
    older_than_days: float = 30, root: str | Path | None = None, *, now: float | None = None
) -> list[tuple[CacheEntry, str]]:
    """Delete the cache files that are cheap to make again and stale (see the module docstring).

    Args:
        older_than_days: cache files not used for longer than this go.
        root: the cache folder; None = `$CIFARLAB_HOME` or `~/.cache/cifarlab`.
        now: the current time (seconds since the epoch), for tests.

    Returns:
        The deleted entries and why each went.

    Raises:
        ValueError: if `older_than_days` is negative or not a number.
    """
    if not (isinstance(older_than_days, int | float) and math.isfinite(older_than_days) and older_than_days >= 0):
        raise ValueError(f"--older-than must be 0 or more days, got {older_than_days}")
    now = time.time() if now is None else now
    removed = []
    for entry in scan_cache(root):
        reason = prune_reason(entry, older_than_days, now)
        if reason is not None:
            entry.path.unlink(missing_ok=True)
            removed.append((entry, reason))
    return removed


def format_size(size: float) -> str:
    """Bytes in binary units, e.g. '176.1 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_usage(root: Path, usage: list[KindUsage]) -> str:
    """The table `cifarlab cache` prints."""
    lines = [
        f"cache folder {root} (set $CIFARLAB_HOME to move it)",
        f"{'kind':<9} {'files':>6} {'size':>11}  last used",
    ]
    for row in usage:
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.last_used)) if row.last_used else "-"
        lines.append(f"{row.kind:<9} {row.files:>6} {format_size(row.size):>11}  {last}")
    total = sum(row.size for row in usage)
    lines.append(f"{'total':<9} {sum(row.files for row in usage):>6} {format_size(total):>11}")
    return "\n".join(lines)
