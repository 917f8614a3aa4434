"""Tests for cifarlab.data.cifar10 on a small fake archive; the only network is a local server."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from cifarlab.data import cifar10
from cifarlab.data.cifar10 import ARCHIVE_NAME, BATCHES_DIR, load_cifar10

pytestmark = pytest.mark.usefixtures("isolated_home")

DEAD_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # nothing listens: any download attempt fails


def assert_matches(data, fake):
    assert data.class_names == fake.class_names
    assert data.source == "cifar10" and data.val is None
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert data.train.images.shape == (100, 3, 32, 32) and data.test.images.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(data.train.images.numpy(), fake.train_images)
    np.testing.assert_array_equal(data.train.labels.numpy(), fake.train_labels)
    np.testing.assert_array_equal(data.test.images.numpy(), fake.test_images)
    np.testing.assert_array_equal(data.test.labels.numpy(), fake.test_labels)


@pytest.fixture
def served(http_server, fake_cifar):
    """The fake archive served over HTTP: (server, url, fake)."""
    return http_server, http_server.serve("cifar.tar.gz", fake_cifar.archive.read_bytes()), fake_cifar


def test_download_and_parse(served, tmp_path):
    server, url, fake = served
    data = load_cifar10(cache_dir=tmp_path / "cache", url=url, md5=fake.md5, progress=False)
    assert_matches(data, fake)
    assert sorted(set(data.train.labels.tolist())) == list(range(10))
    # channel order: a stored row is 1024 red bytes, 1024 green, 1024 blue, each row-major
    row, image = fake.train_rows[7], data.train.images[7].numpy()
    assert image[0, 0, 1] == row[1] and image[0, 1, 0] == row[32]
    assert image[1, 0, 0] == row[1024] and image[2, 31, 31] == row[3071]
    np.testing.assert_array_equal(image[2, 0], 4 + 8 * np.arange(32))  # blue is the left-to-right ramp
    folder = tmp_path / "cache" / "cifar10"
    assert sorted(p.name for p in folder.iterdir()) == [ARCHIVE_NAME, "cifar10-uint8.npz"]


def test_second_call_is_a_cache_hit(served, tmp_path):
    server, url, fake = served
    load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    (tmp_path / "cifar10" / ARCHIVE_NAME).unlink()  # the parsed cache alone is enough
    requests = len(server.requests)
    server.stop()
    data = load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    assert len(server.requests) == requests
    assert_matches(data, fake)
    assert data.notes == []


def test_default_cache_dir_is_cifarlab_home(served, isolated_home):
    server, url, fake = served
    load_cifar10(url=url, md5=fake.md5, progress=False)
    assert (isolated_home / "cifar10" / "cifar10-uint8.npz").is_file()


def test_md5_mismatch_leaves_nothing(served, tmp_path):
    server, url, fake = served
    with pytest.raises(ValueError, match="0" * 32):
        load_cifar10(cache_dir=tmp_path, url=url, md5="0" * 32, progress=False)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_interrupted_download_resumes(served, tmp_path):
    server, url, fake = served
    half = fake.archive.stat().st_size // 2
    server.drop_after = half
    with pytest.raises(OSError, match="re-running resumes"):
        load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    assert [p.name for p in (tmp_path / "cifar10").iterdir()] == [ARCHIVE_NAME + ".part"]

    data = load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    assert server.requests[-1] == ("/cifar.tar.gz", f"bytes={half}-") and server.statuses[-1] == 206
    assert_matches(data, fake)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape"])
def test_corrupt_parsed_cache_is_rebuilt(served, tmp_path, damage):
    server, url, fake = served
    load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    server.stop()  # the archive is kept next to the cache, so the rebuild needs no network
    cache = tmp_path / "cifar10" / "cifar10-uint8.npz"
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "garbage":
        cache.write_bytes(b"not a zip file")
    else:
        with np.load(cache) as npz:
            arrays = dict(npz)
        arrays["train_images"] = arrays["train_images"][:, :, :16]
        with open(cache, "wb") as f:
            np.savez(f, **arrays)
    data = load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False)
    assert_matches(data, fake)
    assert any("rebuilt" in note for note in data.notes)
    assert_matches(load_cifar10(cache_dir=tmp_path, url=url, md5=fake.md5, progress=False), fake)


def test_data_dir_with_archive(fake_cifar, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(fake_cifar.archive, data_dir / ARCHIVE_NAME)
    data = load_cifar10(data_dir, cache_dir=tmp_path / "cache", url=DEAD_URL, md5=fake_cifar.md5, progress=False)
    assert_matches(data, fake_cifar)
    caches = list((tmp_path / "cache" / "cifar10").glob("cifar10-uint8-*.npz"))
    assert len(caches) == 1 and not (tmp_path / "cache" / "cifar10" / ARCHIVE_NAME).exists()

    def no_parsing(*args):
        raise AssertionError("the parsed cache should have been used")

    monkeypatch.setattr(cifar10, "_parse_archive", no_parsing)
    assert_matches(load_cifar10(data_dir, cache_dir=tmp_path / "cache", url=DEAD_URL, md5=fake_cifar.md5), fake_cifar)


def test_data_dir_archive_with_wrong_md5(fake_cifar, tmp_path):
    with pytest.raises(ValueError, match="has md5") as info:
        load_cifar10(fake_cifar.archive.parent, cache_dir=tmp_path, url=DEAD_URL, md5="0" * 32)
    assert str(fake_cifar.archive) in str(info.value)


@pytest.mark.parametrize("layout", ["parent", "batches_dir"])
def test_data_dir_with_extracted_folder(make_fake_cifar, tmp_path, layout):
    fake = make_fake_cifar(class_names=[f"class{i}" for i in range(10)])
    fake.write_folder(tmp_path / "data" / BATCHES_DIR)
    data_dir = tmp_path / "data" if layout == "parent" else tmp_path / "data" / BATCHES_DIR
    data = load_cifar10(data_dir, cache_dir=tmp_path / "cache", url=DEAD_URL, progress=False)
    assert_matches(data, fake)


def test_different_data_dirs_do_not_share_a_cache(make_fake_cifar, tmp_path):
    one = make_fake_cifar("one.tar.gz", seed=1)
    two = make_fake_cifar("two.tar.gz", seed=2)
    one.write_folder(tmp_path / "one")
    two.write_folder(tmp_path / "two")
    assert_matches(load_cifar10(tmp_path / "one", cache_dir=tmp_path / "cache", url=DEAD_URL), one)
    assert_matches(load_cifar10(tmp_path / "two", cache_dir=tmp_path / "cache", url=DEAD_URL), two)


def test_data_dir_without_data(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--data-dir") as info:
        load_cifar10(tmp_path / "empty", cache_dir=tmp_path / "cache", url=DEAD_URL)
    assert str(tmp_path / "empty") in str(info.value) and ARCHIVE_NAME in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere", cache_dir=tmp_path / "cache", url=DEAD_URL)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_forbidden_global_is_refused(make_fake_cifar, tmp_path):
    marker = tmp_path / "pwned"
    fake = make_fake_cifar(overrides={"data_batch_2": pickle.dumps({b"data": Evil(marker)}, protocol=4)})
    with pytest.raises(ValueError, match="data_batch_2") as info:
        load_cifar10(fake.archive.parent, cache_dir=tmp_path / "cache", url=DEAD_URL, md5=fake.md5)
    assert "system' is forbidden" in str(info.value) and str(fake.archive) in str(info.value)
    assert not marker.exists()


def test_missing_member(make_fake_cifar, tmp_path):
    fake = make_fake_cifar(omit=("test_batch",))
    with pytest.raises(ValueError, match=f"{BATCHES_DIR}/test_batch") as info:
        load_cifar10(fake.archive.parent, cache_dir=tmp_path / "cache", url=DEAD_URL, md5=fake.md5)
    assert str(fake.archive) in str(info.value)
    fake.write_folder(tmp_path / "folder")
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(tmp_path / "folder", cache_dir=tmp_path / "cache", url=DEAD_URL)


def test_wrong_shape(make_fake_cifar, tmp_path):
    fake = make_fake_cifar()
    bad = {b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20}
    folder = fake.write_folder(tmp_path / "folder")
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=4))
    with pytest.raises(ValueError, match=r"data_batch_3.*3072"):
        load_cifar10(folder, cache_dir=tmp_path / "cache", url=DEAD_URL)


def test_label_out_of_range(make_fake_cifar, tmp_path):
    fake = make_fake_cifar(class_names=["a", "b"])  # labels go up to 9
    with pytest.raises(ValueError, match=r"labels should lie in \[0, 2\)"):
        load_cifar10(fake.archive.parent, cache_dir=tmp_path / "cache", url=DEAD_URL, md5=fake.md5)


def test_python3_pickles_are_accepted(make_fake_cifar, tmp_path):
    fake = make_fake_cifar()
    folder = fake.write_folder(tmp_path / "folder")
    # numpy 2 names its module numpy._core; protocol 4 writes bytes without any global
    content = {b"data": fake.train_rows[:20], b"labels": [int(x) for x in fake.train_labels[:20]]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(content, protocol=4))
    assert_matches(load_cifar10(folder, cache_dir=tmp_path / "cache", url=DEAD_URL), fake)
