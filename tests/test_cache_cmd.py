"""`cifarlab cache [--prune]`: the size report per kind, and the prune rule on a cache folder built for real."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cifarlab._io.cache_file import write_cache
from cifarlab.cache import cache_usage, prune_cache, scan_cache
from cifarlab.cli import main
from cifarlab.data.folder import load_image_folder
from tests.factories import make_dataset, write_image_folder

DAY = 86400


def age(path: Path, days: float) -> None:
    """Make `path` look last used `days` ago."""
    when = time.time() - days * DAY
    os.utime(path, (when, when))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A cache folder with every kind in it: two image folders decoded, features, a download, leftovers."""
    home = tmp_path / "home"
    monkeypatch.setenv("CIFARLAB_HOME", str(home))
    for name in ("kept", "gone"):
        root = write_image_folder(tmp_path / name, make_dataset(train=8, test=4, num_classes=2))
        load_image_folder(root, workers=1, progress=False)
    shutil.rmtree(tmp_path / "gone")  # its cache entry now belongs to nothing
    write_cache(home / "features" / "recent.safetensors", {"features": np.zeros((4, 8), np.float32)}, {"k": 1})
    write_cache(home / "features" / "old.safetensors", {"features": np.zeros((4, 8), np.float32)}, {"k": 2})
    age(home / "features" / "old.safetensors", 45)
    (home / "cifar10").mkdir()
    (home / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"x" * 5000)  # a download: never pruned
    age(home / "cifar10" / "cifar-10-python.tar.gz", 400)
    (home / "weights").mkdir()
    (home / "weights" / "vgg16-397923af.pth.part").write_bytes(b"x" * 100)  # a partial download: resumable
    age(home / "weights" / "vgg16-397923af.pth.part", 400)
    np.savez(home / "cifar10" / "cifar10-uint8.npz", a=np.zeros(3))  # written before caches had checksums
    (home / "folders" / ".abc.npz.x1.tmp").write_bytes(b"half a write")  # left by a killed process
    age(home / "folders" / ".abc.npz.x1.tmp", 1)
    (home / "features" / ".def.safetensors.x2.tmp").write_bytes(b"a write in progress")  # young: kept
    return home


def test_report_counts_files_and_bytes_per_kind(home, capsys):
    entries = scan_cache(home)
    usage = {row.kind: row for row in cache_usage(entries)}
    assert usage["folders"].files == 3 and usage["features"].files == 3 and usage["cifar10"].files == 2
    assert usage["weights"].files == 1 and usage["weights"].size == 100
    assert sum(row.size for row in usage.values()) == sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"cache folder {home}" in out
    assert re.search(r"^features\s+3\s+\S+ (B|KiB)\s+\d{4}-\d\d-\d\d", out, re.M)
    assert re.search(r"^total\s+9\s+", out, re.M)


def test_prune_keeps_what_is_in_use_and_every_download(home, capsys):
    assert main(["cache", "--prune"]) == 0
    out = capsys.readouterr().out
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    kept_folder = [name for name in left if name.startswith("folders/") and name.endswith(".npz")]
    assert left == sorted(["cifar10/cifar-10-python.tar.gz", "features/.def.safetensors.x2.tmp",
                           "features/recent.safetensors", *kept_folder, "weights/vgg16-397923af.pth.part"])  # fmt: skip
    assert len(kept_folder) == 1
    assert re.search(r"removed folders/\S+\.npz \(.+\): its image folder \S+gone is gone", out)
    assert "removed features/old.safetensors" in out and "not used for 45 days" in out
    assert "removed cifar10/cifar10-uint8.npz" in out and "no cifarlab checksum" in out
    assert "removed folders/.abc.npz.x1.tmp" in out and "interrupted write" in out
    assert "pruned 4 files" in out
    assert main(["cache", "--prune"]) == 0 and "pruned 0 files" in capsys.readouterr().out  # nothing more to do


def test_a_cache_hit_counts_as_a_use(home, tmp_path):
    kept = next(p for p in (home / "folders").glob("*.npz") if _root_of(p) == str((tmp_path / "kept").resolve()))
    age(kept, 90)
    load_image_folder(tmp_path / "kept", workers=1, progress=False)  # a hit refreshes the last use
    assert time.time() - kept.stat().st_mtime < DAY
    assert kept not in [entry.path for entry, _ in prune_cache(30, home)]
    age(kept, 90)
    assert kept in [entry.path for entry, _ in prune_cache(30, home)]


def _root_of(path: Path) -> str:
    from cifarlab._io.cache_file import read_cache_meta

    return read_cache_meta(path)["key"]["root"]


def test_older_than_zero_prunes_every_cache_file_but_no_download(home):
    removed = prune_cache(0, home, now=time.time() + 1)
    assert {entry.role for entry, _ in removed} == {"cache", "temporary"}
    assert (home / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert (home / "weights" / "vgg16-397923af.pth.part").is_file()
    assert not list((home / "features").glob("*.safetensors")) and not list((home / "folders").glob("*.npz"))


def test_an_empty_or_missing_cache_folder_reports_zeros(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "never-made"))
    assert main(["cache", "--prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned 0 files, 0 B freed" in out and re.search(r"^total\s+0\s+0 B", out, re.M)
    assert not (tmp_path / "never-made").exists()  # looking does not create it
