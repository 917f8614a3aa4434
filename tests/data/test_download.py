"""Tests for cifarlab._download: caching, hash checks, resume, errors. Network: a local server only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cifarlab._download import cache_home, download, file_md5, file_sha256

pytestmark = pytest.mark.usefixtures("isolated_home")

BODY = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes
BODY_MD5 = hashlib.md5(BODY).hexdigest()
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


def test_download_writes_file_and_checks_md5(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "deep" / "dir" / "f.bin"
    assert download(url, dest, md5=BODY_MD5, progress=False) == dest
    assert dest.read_bytes() == BODY
    assert not dest.with_name("f.bin.part").exists()
    assert http_server.requests == [("/f.bin", None)]


def test_existing_file_is_a_cache_hit(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "f.bin"
    download(url, dest, md5=BODY_MD5, progress=False)
    download(url, dest, md5=BODY_MD5, progress=False)
    assert len(http_server.requests) == 1
    http_server.stop()
    assert download(url, dest, md5=BODY_MD5, progress=False).read_bytes() == BODY
    assert download(url, dest, progress=False) == dest  # no hash given: any existing file is kept


def test_existing_file_with_wrong_hash_is_downloaded_again(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    download(url, dest, md5=BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY
    assert len(http_server.requests) == 1


def test_md5_mismatch_raises_and_leaves_nothing(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "f.bin"
    wrong = "0" * 32
    with pytest.raises(ValueError) as info:
        download(url, dest, md5=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and BODY_MD5 in message
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix(http_server, tmp_path):
    url = http_server.serve(f"w-{BODY_SHA256[:8]}.pth", BODY)
    dest = tmp_path / "w.pth"
    assert download(url, dest, sha256_prefix=BODY_SHA256[:8].upper(), progress=False).read_bytes() == BODY
    other = tmp_path / "other.pth"
    with pytest.raises(ValueError, match="sha256") as info:
        download(url, other, sha256_prefix="deadbeef", progress=False)
    assert BODY_SHA256 in str(info.value)
    assert not other.exists() and not other.with_name("other.pth.part").exists()


def test_non_hex_hash_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="md5 must be a hex digest"):
        download("http://127.0.0.1:9/x", tmp_path / "x", md5="not-a-hash", progress=False)


def test_interrupted_download_keeps_part_and_resumes_with_range(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "f.bin"
    part = tmp_path / "f.bin.part"
    half = len(BODY) // 2
    http_server.drop_after = half
    with pytest.raises(OSError, match="re-running resumes") as info:
        download(url, dest, md5=BODY_MD5, progress=False)
    assert url in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin.part"]
    assert part.read_bytes() == BODY[:half]

    assert download(url, dest, md5=BODY_MD5, progress=False).read_bytes() == BODY
    assert http_server.requests[-1] == ("/f.bin", f"bytes={half}-")
    assert http_server.statuses[-1] == 206
    assert not part.exists()


def test_server_ignoring_range_starts_over(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    http_server.honour_range = False
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"garbage that is not a prefix")
    download(url, dest, md5=BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY
    assert http_server.requests[-1][1] is not None and http_server.statuses[-1] == 200


def test_complete_part_is_finished_on_416(http_server, tmp_path):
    url = http_server.serve("f.bin", BODY)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(BODY)
    download(url, dest, md5=BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY
    assert http_server.statuses == [416]


def test_http_error_names_url(http_server, tmp_path):
    url = http_server.url + "missing.bin"
    with pytest.raises(OSError, match="HTTP 404") as info:
        download(url, tmp_path / "m.bin", progress=False)
    assert url in str(info.value)


def test_unreachable_server_raises_oserror(tmp_path):
    url = "http://127.0.0.1:9/f.bin"  # the discard port: nothing listens
    with pytest.raises(OSError, match="cannot download .*check the network") as info:
        download(url, tmp_path / "f.bin", progress=False, timeout_s=5)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_file_hashes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(BODY * 150)  # over 1 MiB, so more than one chunk
    assert file_md5(path) == hashlib.md5(BODY * 150).hexdigest()
    assert file_sha256(path) == hashlib.sha256(BODY * 150).hexdigest()


def test_cache_home(monkeypatch, isolated_home, tmp_path):
    assert cache_home() == isolated_home
    monkeypatch.delenv("CIFARLAB_HOME")
    assert cache_home() == Path(tmp_path / "user-home" / ".cache" / "cifarlab")
