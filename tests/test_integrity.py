"""Nothing trusted blindly: every cache and checkpoint is cut short and bit-flipped, and never used as it is.

Caches (parsed CIFAR-10, decoded image folders, backbone features) must be reported in one line, deleted and
rebuilt, and the data returned must equal the data built from scratch. Checkpoints (model.safetensors +
model.json, resume.pt) must be refused with one line, or, where a flipped byte changes nothing that is read,
load exactly as written.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab._io.cache_file import read_cache, write_cache
from cifarlab.cli import main
from cifarlab.data.cifar10 import load_cifar10
from cifarlab.data.folder import load_image_folder
from cifarlab.data.loader import Normalization
from cifarlab.inference.checkpoint import meta_path, read_checkpoint, save_checkpoint
from cifarlab.models import create_model
from cifarlab.training.resume import load_resume_state, save_resume_state
from cifarlab.transfer.features import cached_features
from tests.data.conftest import build_fake_cifar
from tests.factories import make_dataset, make_split, write_image_folder

FLIPS = 24  # bit flips per file, spread evenly from its first byte to its last
CUTS = (0, 1, 0.25, 0.5, 0.9, -1)  # truncated lengths: bytes (int) or fractions of the size (float); -1: all but one


def corruptions(size: int) -> list[tuple[str, int]]:
    """('cut', length) and ('flip', position) damages for a file of `size` bytes."""
    cuts = [size - 1 if c == -1 else int(c * size) if isinstance(c, float) else c for c in CUTS]
    flips = np.linspace(0, size - 1, FLIPS).astype(int)
    return [("cut", n) for n in cuts] + [("flip", int(p)) for p in flips]


def damage(path: Path, how: tuple[str, int]) -> None:
    """Cut `path` short or flip one bit of it, in place."""
    kind, where = how
    data = bytearray(path.read_bytes())
    if kind == "cut":
        data = data[:where]
    else:
        data[where] ^= 1 << (where % 8)
    path.write_bytes(bytes(data))


def one_line(messages: list[str]) -> str:
    assert len(messages) == 1, messages
    assert "\n" not in messages[0]
    return messages[0]


def reload_damaged(path: Path, reload):
    """Damage `path` each way `corruptions` lists, from its pristine bytes, and reload it each time.

    Yields (how, what `reload` returned, whether the damage was caught): caught means one warning line saying the
    file is being deleted.
    """
    pristine = path.read_bytes()
    for how in corruptions(len(pristine)):
        path.write_bytes(pristine)
        damage(path, how)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            result = reload()
        if seen:
            assert "deleting" in one_line([str(w.message) for w in seen]), how
        yield how, result, bool(seen)


# caches


def test_cache_files_round_trip_with_their_key_and_reject_another_key(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.int64).reshape(3, 4), "names": np.array(["x", "yz"])}
    for suffix in (".npz", ".safetensors"):
        path = tmp_path / f"c{suffix}"
        stored = {k: v for k, v in arrays.items() if suffix == ".npz" or v.dtype.kind != "U"}
        write_cache(path, stored, {"kind": "test", "n": 1})
        back = read_cache(path, {"kind": "test", "n": 1}, report=pytest.fail)
        assert back.keys() == stored.keys() and all(np.array_equal(back[k], stored[k]) for k in stored)
        seen: list[str] = []
        assert read_cache(path, {"kind": "test", "n": 2}, report=seen.append) is None
        assert "stale" in one_line(seen) and "n differ" in seen[0] and not path.exists()


def test_cache_without_checksum_is_not_trusted(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, a=np.zeros(3))  # as cifarlab wrote caches before they had checksums
    seen: list[str] = []
    assert read_cache(path, {"kind": "test"}, report=seen.append) is None
    assert "no checksum" in one_line(seen) and not path.exists()


def test_cifar10_cache_cut_or_flipped_is_rebuilt_and_equal(tmp_path):
    fake = build_fake_cifar(tmp_path / "src" / "cifar-10-python.tar.gz", rows_per_batch=10)
    data_dir, cache = fake.archive.parent, tmp_path / "cache"
    clean = load_cifar10(data_dir, cache_dir=cache, md5=fake.md5, progress=False)
    (path,) = (cache / "cifar10").glob("cifar10-uint8-*.npz")
    pristine = path.read_bytes()
    caught = 0
    for how in corruptions(len(pristine)):
        path.write_bytes(pristine)
        damage(path, how)
        data = load_cifar10(data_dir, cache_dir=cache, md5=fake.md5, progress=False)
        assert torch.equal(data.train.images, clean.train.images), how
        assert torch.equal(data.test.labels, clean.test.labels) and data.class_names == clean.class_names, how
        if data.notes:
            assert "rebuilt" in one_line(data.notes), how
            caught += 1
        else:  # the flipped bit was in bytes nothing reads (zip bookkeeping); the file is used as it is
            assert how[0] == "flip", how
        assert read_cache(path, _only_key(path), report=pytest.fail) is not None  # whole again
    assert caught >= len(CUTS) + FLIPS // 2


def _only_key(path: Path) -> dict:
    """The key stored in a cache file (to re-read it without knowing what built it)."""
    with np.load(path) as npz:
        return json.loads(str(npz["__cifarlab__"][()]))["key"]


def test_cifar10_cache_of_another_archive_is_stale(tmp_path):
    one = build_fake_cifar(tmp_path / "one" / "cifar-10-python.tar.gz", rows_per_batch=10, seed=1)
    two = build_fake_cifar(tmp_path / "two" / "cifar-10-python.tar.gz", rows_per_batch=10, seed=2)
    cache = tmp_path / "cache"
    load_cifar10(one.archive.parent, cache_dir=cache, md5=one.md5, progress=False)
    (first,) = (cache / "cifar10").glob("*.npz")
    expected = load_cifar10(two.archive.parent, cache_dir=cache, md5=two.md5, progress=False)
    (second,) = set((cache / "cifar10").glob("*.npz")) - {first}
    shutil.copy(first, second)  # archive one's arrays under archive two's name
    data = load_cifar10(two.archive.parent, cache_dir=cache, md5=two.md5, progress=False)
    assert "stale" in one_line(data.notes) and torch.equal(data.train.images, expected.train.images)


def test_folder_cache_cut_or_flipped_is_rebuilt_and_equal(tmp_path):
    root = write_image_folder(tmp_path / "images", make_dataset(train=12, test=8))
    cache = tmp_path / "cache"
    clean = load_image_folder(root, cache_dir=cache, workers=1, progress=False)
    (path,) = (cache / "folders").glob("*.npz")
    caught = 0
    for how, data, rebuilt in reload_damaged(
        path, lambda: load_image_folder(root, cache_dir=cache, workers=1, progress=False)
    ):
        assert torch.equal(data.train.images, clean.train.images) and torch.equal(data.test.labels, clean.test.labels)
        assert rebuilt or how[0] == "flip", how
        caught += rebuilt
        assert path.is_file()
    assert caught >= len(CUTS) + FLIPS // 2


def test_feature_cache_cut_or_flipped_is_recomputed_and_equal(tmp_path):
    torch.manual_seed(0)
    net = create_model("transfer_net", backbone="proyecto1", num_classes=3)
    net.freeze(0)
    split = make_split(6, num_classes=3)

    def features() -> tuple[torch.Tensor, bool]:
        return cached_features(net, split, Normalization(), batch_size=6, cache_dir=tmp_path)

    clean, hit = features()
    assert not hit
    (path,) = (tmp_path / "features").iterdir()
    caught = 0
    for how, (again, hit), rebuilt in reload_damaged(path, features):
        assert torch.equal(again, clean), how
        if rebuilt:
            assert not hit, how
            caught += 1
        else:  # safetensors pads its JSON header with spaces: a flip there can leave it the same
            assert how[0] == "flip" and hit, how
    assert caught >= len(CUTS) + FLIPS // 2


# checkpoints


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = create_model("proyecto1", num_classes=4)
    meta = {"model": "proyecto1", "model_kwargs": {"num_classes": 4}, "class_names": ["a", "b", "c", "d"],
            "image_size": 32, "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}}  # fmt: skip
    return save_checkpoint(tmp_path / "run" / "model.safetensors", model, meta)


def test_checkpoint_records_its_checksums(checkpoint):
    meta = json.loads(meta_path(checkpoint).read_text())
    assert meta["version"] == 2 and len(meta["weights_sha256"]) == 64
    state, back = read_checkpoint(checkpoint)
    assert back == meta and set(state) == set(create_model("proyecto1", num_classes=4).state_dict())


@pytest.mark.parametrize("file", ["weights", "json"])
def test_checkpoint_cut_or_flipped_is_refused_in_one_line(checkpoint, file):
    target = checkpoint if file == "weights" else meta_path(checkpoint)
    original_state, original_meta = read_checkpoint(checkpoint)
    pristine = target.read_bytes()
    refused = 0
    for how in corruptions(len(pristine)):
        target.write_bytes(pristine)
        damage(target, how)
        try:
            state, meta = read_checkpoint(checkpoint)
        except ValueError as error:
            assert "\n" not in str(error) and target.name in str(error), (how, error)
            refused += 1
            continue
        # accepted: only if what was read is exactly what was written (a flip in header padding)
        assert meta == original_meta and all(torch.equal(state[k], v) for k, v in original_state.items()), how
    assert refused >= len(CUTS) + FLIPS // 2


def test_stale_json_from_another_checkpoint_is_refused(checkpoint, tmp_path):
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other" / "model.safetensors", create_model("proyecto1", num_classes=4),
                            json.loads(meta_path(checkpoint).read_text()))  # fmt: skip
    shutil.copy(meta_path(other), meta_path(checkpoint))  # new weights written, then killed before their JSON
    with pytest.raises(ValueError, match="belongs to other weights"):
        read_checkpoint(checkpoint)


def test_edited_json_and_missing_checksum_are_refused(checkpoint):
    meta = json.loads(meta_path(checkpoint).read_text())
    meta_path(checkpoint).write_text(json.dumps({**meta, "class_names": ["w", "x", "y", "z"]}))
    with pytest.raises(ValueError, match="damaged or edited"):
        read_checkpoint(checkpoint)
    meta_path(checkpoint).write_text(json.dumps({k: v for k, v in meta.items() if k != "weights_sha256"}))
    with pytest.raises(ValueError, match="no weights checksum"):
        read_checkpoint(checkpoint)


def test_version_1_checkpoint_without_checksums_still_loads(tmp_path):
    from safetensors.torch import save_file

    model = create_model("proyecto1", num_classes=4)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"format": "pt"})
    meta_path(path).write_text(json.dumps({"format": "cifarlab-checkpoint", "version": 1, "model": "proyecto1"}))
    state, meta = read_checkpoint(path)
    assert meta["version"] == 1 and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(checkpoint, capsys):
    damage(checkpoint, ("flip", checkpoint.stat().st_size - 7))
    assert main(["evaluate", str(checkpoint.parent), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "Traceback" not in err


def _resume_state() -> dict:
    torch.manual_seed(0)
    model = create_model("proyecto1", num_classes=4)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return {"epoch": 3, "history": {"loss": [1.5, 1.25, 1.0]}, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}  # fmt: skip


def _equal(a, b) -> bool:
    """Deep equality of training states (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_resume_file_round_trips_with_its_checksum(tmp_path):
    state = _resume_state()
    save_resume_state(tmp_path / "resume.pt", state)
    back = load_resume_state(tmp_path / "resume.pt")
    assert back["epoch"] == 3 and len(back["sha256"]) == 64 and torch.equal(back["rng"], state["rng"])


def test_resume_file_cut_or_flipped_is_refused_in_one_line(tmp_path):
    path = tmp_path / "resume.pt"
    state = _resume_state()
    save_resume_state(path, state)
    pristine = path.read_bytes()
    refused = 0
    for how in corruptions(len(pristine)):
        path.write_bytes(pristine)
        damage(path, how)
        try:
            back = load_resume_state(path)
        except ValueError as error:
            assert "\n" not in str(error) and str(path) in str(error), (how, error)
            refused += 1
            continue
        assert _equal({k: v for k, v in back.items() if k not in ("format", "version", "sha256")}, state), how
    assert refused >= len(CUTS) + FLIPS // 2


def test_resume_file_with_a_changed_number_is_refused(tmp_path):
    path = tmp_path / "resume.pt"
    state = _resume_state()
    save_resume_state(path, state)
    payload = torch.load(path, weights_only=True)
    payload["epoch"] = 4  # a flipped bit in the pickled epoch, say: the file still reads
    torch.save(payload, path)
    with pytest.raises(ValueError, match="is damaged"):
        load_resume_state(path)


def test_the_cli_reports_a_rebuilt_cache_in_one_warning_line(checkpoint, tmp_path, capsys):
    images = write_image_folder(tmp_path / "images", replace(make_dataset(train=8, test=8), class_names=list("abcd")))
    argv = ["evaluate", str(checkpoint.parent), "--data", str(images), "--quiet", "--precision", "fp32"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    (cache,) = Path(os.environ["CIFARLAB_HOME"], "folders").glob("*.npz")
    damage(cache, ("flip", cache.stat().st_size // 2))
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == first
    (line,) = captured.err.splitlines()
    assert line.startswith("cifarlab: warning: deleting ") and f"cache file {cache} (" in line and "rebuilt" in line
