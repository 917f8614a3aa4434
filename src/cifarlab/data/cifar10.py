"""CIFAR-10: fetch the official python archive, parse it without extracting, and cache the arrays."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab._download import cache_home, download, file_md5
from cifarlab._io.cache_file import read_cache, write_cache
from cifarlab.data.dataset import Dataset, Split

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
_TRAIN_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_MEMBER = "test_batch"
_META_MEMBER = "batches.meta"
_MEMBERS = (*_TRAIN_MEMBERS, _TEST_MEMBER, _META_MEMBER)
_IMAGE_SHAPE = (3, 32, 32)  # each row holds 1024 R, then 1024 G, then 1024 B bytes, row-major
_CACHE_STEM = "cifar10-uint8"
_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "class_names")
_CACHE_VERSION = 2  # 2: the arrays carry a checksum; bump when parsing or the layout changes

_Arrays = dict[str, np.ndarray]  # the _CACHE_KEYS, as numpy arrays


def load_cifar10(
    data_dir: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
) -> Dataset:
    """Load CIFAR-10 as uint8 tensors, downloading the official archive unless `data_dir` holds it.

    The parsed arrays are cached in `<cache_dir>/cifar10/` as an uncompressed `.npz`, so every call
    after the first loads in well under a second without opening the archive. The cache file carries its
    source's key and the arrays' sha256; one that is unreadable, stale or damaged is deleted and rebuilt
    (with a note in `Dataset.notes`).

    Args:
        data_dir: None to download the archive into `<cache_dir>/cifar10/`; otherwise a folder that
            holds `cifar-10-python.tar.gz` or the extracted `cifar-10-batches-py/` folder (or is that
            folder). Nothing is downloaded when it is given.
        cache_dir: where downloads and parsed arrays go; defaults to `cache_home()`
            (`$CIFARLAB_HOME` or `~/.cache/cifarlab`).
        progress: show a progress bar while downloading.
        url: where to download the archive from (a mirror, say).
        md5: expected md5 of the archive, downloaded or found in `data_dir`.

    Returns:
        A Dataset with 50,000 train and 10,000 test images, (N, 3, 32, 32) uint8, labels int64,
        class names from the archive's `batches.meta`, no validation split, and source "cifar10".

    Raises:
        FileNotFoundError: if `data_dir` holds neither the archive nor the extracted folder.
        ValueError: if the archive's md5 does not match, or a member is missing or malformed.
        OSError: if the download fails; calling again resumes it.

    Example:
        >>> data = load_cifar10()  # downloads 163 MiB once, then loads from the cache
        >>> data.train.images.shape
        torch.Size([50000, 3, 32, 32])
    """
    cache_folder = (Path(cache_dir) if cache_dir is not None else cache_home()) / "cifar10"
    build: Callable[[], _Arrays]
    key = {"kind": "cifar10", "version": _CACHE_VERSION, "md5": md5}
    if data_dir is None:
        cache_file = cache_folder / f"{_CACHE_STEM}.npz"
        key["source"] = "download"

        def build() -> _Arrays:
            try:
                archive = download(url, cache_folder / ARCHIVE_NAME, md5=md5, progress=progress)
            except OSError as error:
                offline = "or use --data-dir DIR (a folder with the archive) or --data FOLDER (image folder), offline"
                raise OSError(f"{error}; {offline}") from error
            return _parse_archive(archive)

    else:
        source = _find_source(Path(data_dir).expanduser())
        # Keyed by the source's path, sizes and mtimes: cheap to compute, and a different folder (or a
        # changed file) never hits another's cache.
        key["source"] = _fingerprint(source, md5)
        cache_file = cache_folder / f"{_CACHE_STEM}-{key['source']}.npz"

        def build() -> _Arrays:
            if source.is_dir():
                return _parse_folder(source)
            _verify_md5(source, md5)
            return _parse_archive(source)

    notes: list[str] = []
    arrays = _read_cache(cache_file, key, notes)
    if arrays is None:
        arrays = build()
        _write_cache(cache_file, arrays, key, notes)
    return Dataset(
        class_names=[str(name) for name in arrays["class_names"]],
        train=Split(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])),
        test=Split(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])),
        val=None,
        source="cifar10",
        notes=notes,
    )


def _find_source(data_dir: Path) -> Path:
    """Return the archive or the folder of batch files that `data_dir` points at."""
    if data_dir.is_file() and data_dir.name.endswith((".tar.gz", ".tgz")):
        return data_dir  # the archive itself was given
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 data folder {data_dir} does not exist; fix --data-dir, or leave it out to download the data"
        )
    if (data_dir / ARCHIVE_NAME).is_file():
        return data_dir / ARCHIVE_NAME
    if (data_dir / BATCHES_DIR).is_dir():
        return data_dir / BATCHES_DIR
    if any((data_dir / member).is_file() for member in _MEMBERS):
        return data_dir
    raise FileNotFoundError(
        f"no CIFAR-10 data in {data_dir}: looked for {ARCHIVE_NAME}, a {BATCHES_DIR}/ folder and the batch files "
        f"({', '.join(_MEMBERS)}); put the archive from {CIFAR10_URL} there, fix --data-dir, "
        "or leave --data-dir out to download the data"
    )


def _fingerprint(source: Path, md5: str) -> str:
    """Short hash of the source's resolved path and its files' names, sizes and mtimes."""
    files = [source] if source.is_file() else [source / member for member in _MEMBERS]
    parts = [str(source.resolve()), md5]
    for path in files:
        stat = path.stat() if path.is_file() else None
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{path.name}:-")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _verify_md5(archive: Path, md5: str | None) -> None:
    """Raise ValueError if the archive's md5 is not `md5`."""
    if md5 is None:
        return
    actual = file_md5(archive)
    if actual != md5.lower():
        raise ValueError(
            f"{archive} has md5 {actual}, expected {md5}: it is corrupt or not the CIFAR-10 python archive; "
            f"download it again from {CIFAR10_URL} or point --data-dir at another copy"
        )


def _parse_archive(archive: Path) -> _Arrays:
    """Parse the batches straight out of the tar.gz, in one streaming pass, without extracting to disk."""
    wanted = {f"{BATCHES_DIR}/{member}": member for member in _MEMBERS}
    parsed: dict[str, Any] = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is None or not info.isfile():
                    continue
                raw = tar.extractfile(info).read()
                parsed[member] = _parse_member(raw, member, f"{archive} member {info.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ValueError(
            f"cannot read {archive} as a tar.gz archive ({e}); download it again from {CIFAR10_URL}"
        ) from e
    missing = [f"{BATCHES_DIR}/{member}" for member in _MEMBERS if member not in parsed]
    if missing:
        raise ValueError(f"{archive} is not the CIFAR-10 python archive: it has no member {', '.join(missing)}")
    return _assemble(parsed, str(archive))


def _parse_folder(folder: Path) -> _Arrays:
    """Parse the batch files of an extracted `cifar-10-batches-py/` folder."""
    missing = [member for member in _MEMBERS if not (folder / member).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a complete CIFAR-10 batches folder: it has no {', '.join(missing)}")
    parsed = {}
    for member in _MEMBERS:
        path = folder / member
        parsed[member] = _parse_member(path.read_bytes(), member, str(path))
    return _assemble(parsed, str(folder))


def _parse_member(raw: bytes, member: str, where: str) -> Any:
    """Unpickle one member: (images, labels) for a batch, the list of class names for `batches.meta`."""
    content = _restricted_loads(raw, where)
    if not isinstance(content, dict):
        raise ValueError(f"{where} should hold a dict, got {type(content).__name__}")
    if member == _META_MEMBER:
        return _parse_meta(content, where)
    return _parse_batch(content, where)


def _parse_batch(content: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a batch dict and return its images, (N, 3, 32, 32) uint8, and labels, (N,) int64."""
    data = _entry(content, "data", where)
    row_bytes = int(np.prod(_IMAGE_SHAPE))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == row_bytes):
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{where}: 'data' should be a uint8 array of shape (N, {row_bytes}), got {found}")
    labels = np.asarray(_entry(content, "labels", where))
    if labels.shape != (len(data),) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{where}: 'labels' should be {len(data)} integers, one per row of 'data', got {labels.shape}")
    return data.reshape(-1, *_IMAGE_SHAPE), labels.astype(np.int64)


def _parse_meta(content: dict, where: str) -> list[str]:
    """Return the class names of `batches.meta`, decoded from bytes."""
    names = _entry(content, "label_names", where)
    if not (isinstance(names, list | tuple) and names and all(isinstance(n, bytes | str) for n in names)):
        raise ValueError(f"{where}: 'label_names' should be a non-empty list of strings")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _entry(content: dict, key: str, where: str) -> Any:
    """Look `key` up as bytes (python-2 pickles) or as str."""
    for k in (key.encode(), key):
        if k in content:
            return content[k]
    raise ValueError(f"{where} has no {key!r} entry")


def _assemble(parsed: dict[str, Any], where: str) -> _Arrays:
    """Join the parsed members into the cached arrays, checking the labels against the class names."""
    train = [parsed[member] for member in _TRAIN_MEMBERS]
    test_images, test_labels = parsed[_TEST_MEMBER]
    arrays = {
        "train_images": np.concatenate([images for images, _ in train]),
        "train_labels": np.concatenate([labels for _, labels in train]),
        "test_images": np.ascontiguousarray(test_images),
        "test_labels": test_labels,
        "class_names": np.array(parsed[_META_MEMBER], dtype=str),
    }
    _check_arrays(arrays, where)
    return arrays


def _check_arrays(arrays: _Arrays, where: str) -> None:
    """Raise ValueError unless the arrays have the shapes, dtypes and label range of CIFAR-10."""
    num_classes = len(arrays["class_names"])
    if arrays["class_names"].ndim != 1 or arrays["class_names"].dtype.kind != "U" or num_classes == 0:
        raise ValueError(f"{where}: class names should be a non-empty list of strings")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != _IMAGE_SHAPE:
            found = f"{images.dtype} {images.shape}"
            raise ValueError(f"{where}: {split} images should be uint8 (N, 3, 32, 32), got {found}")
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            found = f"{labels.dtype} {labels.shape}"
            raise ValueError(f"{where}: {split} labels should be int64 ({len(images)},), got {found}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            found = f"{labels.min()}..{labels.max()}"
            raise ValueError(f"{where}: {split} labels should lie in [0, {num_classes}), got {found}")


def _read_cache(path: Path, key: dict[str, Any], notes: list[str]) -> _Arrays | None:
    """The parsed arrays at `path`, checked (`read_cache`); None when absent or untrustworthy (then deleted)."""
    arrays = read_cache(path, key, check=lambda found: _check_arrays(found, str(path)), report=notes.append)
    if arrays is None:
        return None
    # torch.from_numpy wants writable arrays; np.load gives them, but be sure rather than warn later
    return {name: arrays[name] if arrays[name].flags.writeable else arrays[name].copy() for name in _CACHE_KEYS}


def _write_cache(path: Path, arrays: _Arrays, key: dict[str, Any], notes: list[str]) -> None:
    """Save the arrays to `path` atomically, with their key and checksum."""
    try:
        write_cache(path, arrays, key)
    except OSError as e:
        # The data is fine; only the next load gets slower.
        notes.append(
            f"could not write the parsed CIFAR-10 cache {path} ({e}); the data will be parsed again next time "
            "(set cache_dir or $CIFARLAB_HOME to a writable folder)"
        )


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and plain containers, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed numpy global, or raise UnpicklingError."""
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden (only numpy arrays are allowed)")
        return found


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The numpy globals a pickled ndarray refers to, under their numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray  # numpy >= 2 (and a shim in late 1.x)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


def _restricted_loads(raw: bytes, where: str) -> Any:
    """Unpickle a python-2 CIFAR pickle (bytes keys) with the restricted unpickler."""
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a malformed pickle can raise almost anything; all of it means a bad member
        raise ValueError(f"cannot unpickle {where}: {e}") from e
