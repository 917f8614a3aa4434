"""Resumable, hash-checked downloads into a cache folder (data archives, model weights)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from cifarlab.progress import progress_bar

_CHUNK_BYTES = 1 << 20  # 1 MiB, for reading files and network responses
_HEX = re.compile(r"[0-9a-fA-F]+")


def cache_home() -> Path:
    """Return the folder cifarlab caches downloads and parsed data in.

    Returns:
        `$CIFARLAB_HOME` when that variable is set and not empty, else `~/.cache/cifarlab`.
    """
    home = os.environ.get("CIFARLAB_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "cifarlab"


def file_md5(path: str | Path) -> str:
    """Return the md5 hex digest of the file at `path`, read in 1 MiB chunks."""
    return _file_digest(path, hashlib.md5())


def file_sha256(path: str | Path) -> str:
    """Return the sha256 hex digest of the file at `path`, read in 1 MiB chunks."""
    return _file_digest(path, hashlib.sha256())


def _file_digest(path: str | Path, hasher: hashlib._Hash) -> str:
    """Feed the file to `hasher` chunk by chunk and return its hex digest."""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256_prefix: str | None = None,
    progress: bool = True,
    timeout_s: float = 60,
) -> Path:
    """Download `url` to `dest`, resuming a partial download and checking the file's hash.

    An existing `dest` whose hash matches (or any existing `dest` when no hash is given) is returned
    without touching the network; one that does not match is deleted and downloaded again. Bytes go to
    `dest` + ".part" first; a `.part` left by an interrupted run is continued with an HTTP Range request
    (or started over when the server ignores the range). Only a complete file whose hash matches is
    moved onto `dest`, atomically.

    Args:
        url: what to fetch (http, https or file URL).
        dest: where the file ends up; missing parent folders are created.
        md5: expected md5 hex digest, or None to skip the check.
        sha256_prefix: expected start of the sha256 hex digest (as in torch hub names
            `name-<8 hex>.pth`), or None to skip the check.
        progress: show a tqdm progress bar in bytes.
        timeout_s: seconds to wait for the server before giving up.

    Returns:
        `dest`, as a Path.

    Raises:
        ValueError: if a hash is not hex, or the downloaded file does not match it (the partial
            file is deleted).
        OSError: if the download fails or is cut off; the partial file is kept, so calling again
            resumes it.

    Example:
        >>> path = download(url, cache_home() / "weights" / "resnet20-1a2b3c4d.pth", sha256_prefix="1a2b3c4d")
    """
    dest = Path(dest)
    md5 = _check_hex(md5, "md5")
    sha256_prefix = _check_hex(sha256_prefix, "sha256_prefix")
    if dest.exists():
        if _hash_mismatch(dest, md5, sha256_prefix) is None:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fetch(url, part, progress=progress, timeout_s=timeout_s)
    mismatch = _hash_mismatch(part, md5, sha256_prefix)
    if mismatch is not None:
        part.unlink()
        kind, expected, actual = mismatch
        raise ValueError(
            f"download of {url} is corrupt: expected {kind} {expected}, got {actual}; "
            "the partial file was deleted (check the url and the expected hash)"
        )
    os.replace(part, dest)
    return dest


def _check_hex(value: str | None, name: str) -> str | None:
    """Return `value` in lower case, after checking that it is a hex string."""
    if value is None:
        return None
    if not _HEX.fullmatch(value):
        raise ValueError(f"{name} must be a hex digest, got {value!r}")
    return value.lower()


def _hash_mismatch(path: Path, md5: str | None, sha256_prefix: str | None) -> tuple[str, str, str] | None:
    """Return (hash kind, expected, actual) for the first hash `path` fails, or None when all match."""
    if md5 is not None:
        actual = file_md5(path)
        if actual != md5:
            return "md5", md5, actual
    if sha256_prefix is not None:
        actual = file_sha256(path)
        if not actual.startswith(sha256_prefix):
            return "sha256 starting with", sha256_prefix, actual
    return None


def _fetch(url: str, part: Path, *, progress: bool, timeout_s: float) -> None:
    """Fill `part` with the whole body of `url`, continuing what is already in it where the server allows."""
    # Two attempts: the second starts from zero when the server cannot continue the partial file.
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "cifarlab"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if _write_body(response, part, offset, progress=progress):
                    return
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                # Range not satisfiable: the part is complete if the server's size is exactly what we have.
                if _content_range_total(e.headers.get("Content-Range")) == offset:
                    return
            else:
                hint = "re-running resumes" if e.code >= 500 else "check the url"
                raise OSError(f"download of {url} failed: HTTP {e.code} {e.reason}; {hint}") from e
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or str(e) or type(e).__name__
            if part.exists() and part.stat().st_size > 0:
                kept = f"the partial file {part} was kept"
                raise OSError(f"download of {url} was interrupted ({reason}); {kept}; re-running resumes") from e
            raise OSError(f"cannot download {url} ({reason}); check the network") from e
        part.unlink(missing_ok=True)
    raise OSError(f"download of {url} failed: the server cannot continue the partial file; re-running starts over")


def _write_body(response: http.client.HTTPResponse, part: Path, offset: int, *, progress: bool) -> bool:
    """Write the response body to `part` (appending on a matching 206); return False if the range was wrong."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None else None
    if response.status == 206:
        start = _content_range_start(response.headers.get("Content-Range"))
        if start != offset:
            return False
        mode = "ab"
        total = _content_range_total(response.headers.get("Content-Range"))
    else:  # the server sent the whole file: start over
        offset, mode = 0, "wb"
        total = length
    received = 0
    with (
        open(part, mode) as f,
        progress_bar(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        while chunk := response.read(_CHUNK_BYTES):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if length is not None and received < length:
        raise ConnectionError(f"connection closed after {offset + received} of {offset + length} bytes")
    return True


def _content_range_start(header: str | None) -> int | None:
    """First byte position of a `Content-Range: bytes START-END/TOTAL` header, or None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    """Total size from a `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) header, or None."""
    match = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", header or "")
    return int(match.group(1)) if match else None
