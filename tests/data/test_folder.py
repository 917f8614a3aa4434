"""Tests for cifarlab.data.folder: image folders generated in tmp_path, never real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.data import folder
from cifarlab.data.folder import load_image_folder

CLASSES = ("dog", "cat", "bird")  # created out of order: the loader must sort them
COLOURS = {"bird": (200, 30, 40), "cat": (20, 180, 60), "dog": (40, 70, 220)}
GRAY = {"bird": 60, "cat": 128, "dog": 220}


def solid(mode: str, size: tuple[int, int], name: str) -> Image.Image:
    """A one-colour image of class `name` in `mode`."""
    if mode == "L":
        return Image.new("L", size, GRAY[name])
    image = Image.new("RGB", size, COLOURS[name])
    if mode == "RGBA":
        return image.convert("RGBA")  # opaque, so compositing must not change it
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return image.convert(mode)


# (file name, mode, size, expected colour function): one of each kind in every class folder
TRAIN_KINDS = [
    ("0.png", "RGB", (32, 32)),
    ("1.png", "RGBA", (40, 30)),
    ("2.jpg", "L", (32, 32)),
    ("3.bmp", "P", (32, 32)),
]
TEST_KINDS = [("a.gif", "P", (20, 20)), ("b.JPEG", "RGB", (64, 48))]


def make_folder(root: Path, splits: dict[str, list[tuple[str, str, tuple[int, int]]]] | None = None) -> Path:
    """Write root/<split>/<class>/<file> for every class in CLASSES; returns root."""
    splits = splits or {"train": TRAIN_KINDS, "test": TEST_KINDS}
    for split, kinds in splits.items():
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for file_name, mode, size in kinds:
                solid(mode, size, name).save(root / split / name / file_name)
    return root


def load(root: Path, **options) -> folder.Dataset:
    """load_image_folder with a private cache and no progress bar."""
    options.setdefault("cache_dir", root.parent / "cache")
    options.setdefault("progress", False)
    return load_image_folder(root, **options)


def expected_colour(name: str, mode: str) -> tuple[int, int, int]:
    return (GRAY[name],) * 3 if mode == "L" else COLOURS[name]


def test_loads_mixed_formats_with_sorted_classes(tmp_path):
    root = make_folder(tmp_path / "pets")
    data = load(root)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.source == str(root) and data.val is None and data.notes == []
    assert data.train.images.shape == (12, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (6, 3, 32, 32)
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for index, (label, image) in enumerate(zip(data.train.labels, data.train.images)):
        name = data.class_names[label]
        _, mode, _ = TRAIN_KINDS[index % 4]
        # JPEG and bicubic resizing of a flat colour may be off by a level or two
        colour = torch.tensor(expected_colour(name, mode), dtype=torch.int16).view(3, 1, 1)
        assert (image.to(torch.int16) - colour).abs().max() <= 2, (name, mode)
    for label, image in zip(data.test.labels, data.test.images):
        colour = torch.tensor(COLOURS[data.class_names[label]], dtype=torch.int16).view(3, 1, 1)
        assert (image.to(torch.int16) - colour).abs().max() <= 2


def test_rgb_png_round_trips_exactly_in_sorted_file_order(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "noise"
    pixels = {}
    for split in ("train", "test"):
        (root / split / "only").mkdir(parents=True)
        for file_name in ("b.png", "a.png", "10.png", "2.png"):
            pixels[split, file_name] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels[split, file_name]).save(root / split / "only" / file_name)
    data = load(root)
    for position, file_name in enumerate(["10.png", "2.png", "a.png", "b.png"]):
        loaded = data.train.images[position].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(loaded, pixels["train", file_name])


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :8, 3] = 0
    rgba[:, 8:16, 3] = 255
    rgba[:, 16:, 3] = 128
    root = tmp_path / "alpha"
    for split in ("train", "test"):
        (root / split / "x").mkdir(parents=True)
        Image.fromarray(rgba).save(root / split / "x" / "a.png")
        Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])).save(root / split / "x" / "b.png")
    image, gray = load(root).train.images.permute(0, 2, 3, 1).numpy()
    assert (image[:, :8] == 255).all() and (gray[:, :8] == 255).all()
    assert (image[:, 8:16] == (200, 100, 50)).all() and (gray[:, 8:16] == 200).all()
    assert (image[:, 16:] == (227, 177, 152)).all() and (gray[:, 16:] == 227).all()


def test_other_modes_convert_to_rgb(tmp_path):
    root = tmp_path / "modes"
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    cmyk = Image.new("CMYK", (32, 32), (10, 200, 30, 40))
    for split in ("train", "test"):
        (root / split / "x").mkdir(parents=True)
        Image.fromarray(gray).save(root / split / "x" / "a.png")
        Image.fromarray(gray.astype(np.uint16) << 8).save(root / split / "x" / "b.png")  # 16-bit grayscale
        cmyk.save(root / split / "x" / "c.tif")
    l_image, deep, cmyk_image = load(root).train.images.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(l_image, np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(deep, l_image)  # scaled to 8 bits, not clipped to white
    np.testing.assert_array_equal(cmyk_image, np.asarray(cmyk.convert("RGB")))


def test_resizes_to_image_size_with_bicubic(tmp_path):
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    root = tmp_path / "big"
    for split in ("train", "test"):
        (root / split / "x").mkdir(parents=True)
        noise.save(root / split / "x" / "a.png")
    data = load(root, image_size=16)
    assert data.image_size == 16 and data.train.images.shape == (1, 3, 16, 16)
    expected = np.asarray(noise.resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(data.test.images[0].permute(1, 2, 0).numpy(), expected)


def test_val_folder_is_used(tmp_path):
    root = make_folder(tmp_path / "pets", {"train": TRAIN_KINDS, "test": TEST_KINDS, "val": TEST_KINDS[:1]})
    data = load(root)
    assert data.val is not None and data.val.labels.tolist() == [0, 1, 2]


def test_non_image_files_and_hidden_entries_are_ignored(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "README.md").write_text("hello")
    solid("RGB", (32, 32), "cat").save(root / "train" / "cat" / "9.PNG")
    data = load(root)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.train.labels.tolist() == [0] * 4 + [1] * 5 + [2] * 4


def test_missing_root_and_splits(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    root = make_folder(tmp_path / "pets", {"train": TRAIN_KINDS})
    with pytest.raises(FileNotFoundError, match=r"has no test/ folder; expected .*/test/<class>/<image>"):
        load(root)
    (root / "test").mkdir()
    with pytest.raises(ValueError, match=r"test has no class folders"):
        load(root)


def test_class_mismatch_names_missing_and_extra(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "test" / "dog").rename(root / "test" / "cow")
    with pytest.raises(ValueError, match=r"test has different class folders .*missing: 'dog'; extra: 'cow'"):
        load(root)


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "pets")
    for file in (root / "train" / "cat").iterdir():
        file.unlink()
    (root / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class 'cat' in .*train is empty"):
        load(root)


def test_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "pets")
    bad = root / "train" / "dog" / "5.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="--skip-bad-images") as error:
        load(root)
    assert str(bad) in str(error.value)


def test_skip_bad_images_warns_counts_and_notes(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "train" / "dog" / "5.png").write_bytes(b"this is not a png")
    jpeg = (root / "test" / "bird" / "b.JPEG").read_bytes()
    (root / "test" / "bird" / "b.JPEG").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    with pytest.warns(UserWarning, match="skipped 2 unreadable images"):
        data = load(root, skip_bad_images=True)
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test.labels.tolist() == [0, 1, 1, 2, 2]
    assert len(data.notes) == 1 and f"(first: {root / 'train' / 'dog' / '5.png'}: " in data.notes[0]
    # each image keeps its file, the unreadable ones left out, through the cache and the splits' subsets
    assert data.train.files.tolist()[3:6] == ["train/bird/3.bmp", "train/cat/0.png", "train/cat/1.png"]
    assert "train/dog/5.png" not in data.train.files and len(data.test.files) == 5
    assert data.train.subset(torch.tensor([11, 0])).files.tolist() == ["train/dog/3.bmp", "train/bird/0.png"]
    with pytest.warns(UserWarning, match="skipped 2 unreadable images"):  # a cache hit keeps the note
        cached = load(root, skip_bad_images=True)
    assert cached.notes == data.notes and cached.train.files.tolist() == data.train.files.tolist()


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "many"
    for split, count in (("train", 70), ("test", 3)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    (root / "train" / "dog" / "69.png").write_bytes(b"corrupt")  # lands in a later chunk
    monkeypatch.setattr(folder, "_MIN_PARALLEL_FILES", 1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        parallel = load(root, image_size=8, workers=2, skip_bad_images=True, cache_dir=tmp_path / "c1")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        serial = load(root, image_size=8, workers=1, skip_bad_images=True, cache_dir=tmp_path / "c2")
    assert len(parallel.train) == 209 and parallel.notes == serial.notes
    assert torch.equal(parallel.train.images, serial.train.images)
    assert torch.equal(parallel.train.labels, serial.train.labels)


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(folder, "_decode_files", fail)


def _count_decodes(monkeypatch) -> list[int]:
    calls = []
    real = folder._decode_files

    def counting(paths, *args):
        calls.append(len(paths))
        return real(paths, *args)

    monkeypatch.setattr(folder, "_decode_files", counting)
    return calls


def test_second_load_hits_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    first = load(root)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 1
    _forbid_decoding(monkeypatch)
    second = load(root)
    assert second.class_names == first.class_names
    assert torch.equal(second.train.images, first.train.images) and torch.equal(second.test.labels, first.test.labels)
    with pytest.raises(AssertionError, match="decoded although"):  # other options are another cache entry
        load(root, image_size=16)


def test_cache_home_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    load_image_folder(make_folder(tmp_path / "pets"), progress=False)
    assert len(list((tmp_path / "home" / "folders").glob("*.npz"))) == 1


def test_changed_added_or_removed_files_invalidate_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    calls = _count_decodes(monkeypatch)
    load(root)
    load(root)
    assert calls == [18]
    target = root / "train" / "cat" / "0.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched
    load(root)
    solid("RGB", (32, 32), "dog").save(target)  # new content
    assert torch.equal(load(root).train.images[4], load(root).train.images[8])
    (root / "test" / "cat" / "c.png").write_bytes(target.read_bytes())  # added
    assert len(load(root).test) == 7
    target.unlink()  # removed
    assert len(load(root).train) == 11
    assert calls == [18, 18, 18, 19, 18]
    assert len(list((tmp_path / "cache" / "folders").glob("*"))) == 1  # stale entries and temp files are gone


def test_corrupt_cache_file_is_rebuilt(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    first = load(root)
    (cache_file,) = (tmp_path / "cache" / "folders").glob("*.npz")
    cache_file.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="deleting unreadable cache file"):
        rebuilt = load(root)
    assert torch.equal(rebuilt.train.images, first.train.images)
    _forbid_decoding(monkeypatch)
    assert torch.equal(load(root).train.images, first.train.images)  # and it was written again


def test_unwritable_cache_warns_but_loads(tmp_path):
    root = make_folder(tmp_path / "pets")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(UserWarning, match="could not write the image cache"):
        data = load(root, cache_dir=blocker)
    assert len(data.train) == 12


@pytest.mark.parametrize("options", [{"image_size": 0}, {"workers": 0}])
def test_bad_options(tmp_path, options):
    with pytest.raises(ValueError, match="must be 1 or more"):
        load(make_folder(tmp_path / "pets"), **options)
