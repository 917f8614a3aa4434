"""Load a dataset from image folders (`root/train/<class>/*`, `root/test/<class>/*`), decoding once and caching."""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cifarlab._download import cache_home
from cifarlab._io.cache_file import read_cache, write_cache
from cifarlab.data.dataset import Dataset, Split
from cifarlab.inference.images import IMAGE_SUFFIXES, decode_image
from cifarlab.progress import progress_bar

_SPLITS = ("train", "test", "val")
# bump when decoding or the cache layout changes, so old cache files stop matching (2: alpha onto white,
# 3: float images scaled from [0, 1], 32-bit integer images above 16 bits refused, 4: each image's file kept)
_CACHE_VERSION = 4
_MIN_PARALLEL_FILES = 512  # below this a worker pool costs more than it saves
_LAYOUT = "{root}/train/<class>/<image> and {root}/test/<class>/<image> (optionally {root}/val/<class>/<image>)"


@dataclass
class _Listing:
    """The image files of one folder dataset, in load order."""

    class_names: list[str]
    files: list[str]  # all splits, concatenated in _SPLITS order (str, not Path: 60,000 Paths cost 0.3 s)
    labels: np.ndarray  # (N,) int64
    split_sizes: dict[str, int]  # split name -> number of files; only splits that exist
    fingerprint: list[str]  # one 'relpath size mtime_ns' line per file


def load_image_folder(
    root: str | Path,
    *,
    image_size: int = 32,
    skip_bad_images: bool = False,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Dataset:
    """Load a labelled dataset from image folders, one subfolder per class.

    The expected layout is `root/train/<class>/<image>` and `root/test/<class>/<image>`, with an
    optional `root/val/<class>/<image>` (kept as the validation split). Class names are the sorted
    folder names under `train/`; `test/` and `val/` must have the same classes. Images are the files
    directly in each class folder whose suffix is one of `IMAGE_SUFFIXES` (any case); hidden and other
    files are ignored, and files load in sorted name order.

    Images are decoded by `cifarlab.inference.images.decode_image`, the function prediction uses too:
    every image becomes RGB (transparency composited onto white, 16-bit grayscale scaled to 8 bits, EXIF
    rotation applied, other modes such as L, P and CMYK converted by Pillow), and images that are not
    `image_size` square are resized with bicubic filtering (without keeping the aspect ratio).

    Decoded arrays are cached in `<cache_dir>/folders/` (default `$CIFARLAB_HOME/folders/`, i.e.
    `~/.cache/cifarlab/folders/`). The cache key covers the folder's path, the options and every
    image's relative path, size and modification time, so editing, adding or removing an image
    decodes the folder again; an unchanged folder loads without decoding anything. Each cache file
    carries that key and its arrays' sha256: one that is unreadable, stale or damaged is deleted and
    decoded again, with a warning.

    Args:
        root: folder holding `train/`, `test/` and optionally `val/`.
        image_size: side length in pixels of the returned (square) images.
        skip_bad_images: skip files Pillow cannot read (with a warning and a note in `Dataset.notes`)
            instead of raising.
        cache_dir: cache root; `None` uses `$CIFARLAB_HOME` or `~/.cache/cifarlab`.
        workers: decoding processes; `None` uses `os.cpu_count()`, 1 decodes in this process.
        progress: show a progress bar while decoding.

    Returns:
        A `Dataset` whose splits hold (N, 3, image_size, image_size) uint8 images and int64 labels.

    Raises:
        FileNotFoundError: if `root`, `root/train` or `root/test` does not exist.
        ValueError: if the layout is wrong (a split without class folders, an empty class folder,
            class folders that differ between splits), an image cannot be read and `skip_bad_images`
            is off, or an option is out of range.

    Example:
        >>> data = load_image_folder("~/data/pets", image_size=64)  # doctest: +SKIP
        >>> data.class_names, data.train.images.shape  # doctest: +SKIP
        (['cat', 'dog'], torch.Size([800, 3, 64, 64]))
    """
    if image_size < 1:
        raise ValueError(f"image_size must be 1 or more, got {image_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be 1 or more (or None for one per CPU), got {workers}")
    folder = Path(root).expanduser()
    listing = _list_images(folder)
    cache_path, key = _cache_path(
        Path(cache_dir) if cache_dir is not None else cache_home(), folder, listing, image_size, skip_bad_images
    )

    arrays = _read_cache(cache_path, key, list(listing.split_sizes), image_size)
    if arrays is None:
        arrays = _build_arrays(listing, image_size, skip_bad_images, workers or os.cpu_count() or 1, progress)
        _write_cache(cache_path, key, arrays)

    notes = [str(note) for note in arrays["notes"]]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    splits = {
        name: Split(
            torch.from_numpy(arrays[f"{name}_images"]),
            torch.from_numpy(arrays[f"{name}_labels"]),
            arrays[f"{name}_files"],
        )
        for name in listing.split_sizes
    }
    return Dataset(
        class_names=listing.class_names,
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        source=str(root),
        notes=notes,
    )


def _list_images(root: Path) -> _Listing:
    """Find the class folders and image files under `root`, checking the layout."""
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist; expected {_LAYOUT.format(root=root)}")
    if not root.is_dir():
        raise ValueError(f"image folder {root} is a file, not a folder; expected {_LAYOUT.format(root=root)}")
    for required in ("train", "test"):
        if not (root / required).is_dir():
            raise FileNotFoundError(f"{root} has no {required}/ folder; expected {_LAYOUT.format(root=root)}")

    split_classes = {name: _class_folders(root / name) for name in _SPLITS if (root / name).is_dir()}
    class_names = split_classes["train"]
    for name, classes in split_classes.items():
        if classes != class_names:
            missing = ", ".join(repr(c) for c in class_names if c not in classes) or "none"
            extra = ", ".join(repr(c) for c in classes if c not in class_names) or "none"
            raise ValueError(
                f"{root / name} has different class folders from {root / 'train'} (missing: {missing}; "
                f"extra: {extra}); give {name}/ the same class folders as train/"
            )

    files: list[str] = []
    labels: list[int] = []
    fingerprint: list[str] = []
    split_sizes: dict[str, int] = {}
    for name in split_classes:
        start = len(files)
        for label, class_name in enumerate(class_names):
            class_dir = root / name / class_name
            entries = sorted((e for e in os.scandir(class_dir) if _is_image(e)), key=lambda e: e.name)
            if not entries:
                raise ValueError(
                    f"class {class_name!r} in {root / name} is empty (no {_suffix_list()} files in "
                    f"{class_dir}); add images to it or remove the folder from every split"
                )
            for entry in entries:
                stat = entry.stat()
                files.append(entry.path)
                fingerprint.append(f"{name}/{class_name}/{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
            labels.extend([label] * len(entries))
        split_sizes[name] = len(files) - start
    return _Listing(class_names, files, np.asarray(labels, dtype=np.int64), split_sizes, fingerprint)


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the non-hidden subfolders of `split_dir`; raise if there are none."""
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"{split_dir} has no class folders; put each class's images in {split_dir}/<class>/")
    return names


def _is_image(entry: os.DirEntry) -> bool:
    """Whether a directory entry is a visible file with an image suffix."""
    name = entry.name
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()


def _suffix_list() -> str:
    """The accepted suffixes, for error messages."""
    return "/".join(sorted(IMAGE_SUFFIXES))


def _cache_path(
    cache_root: Path, root: Path, listing: _Listing, image_size: int, skip_bad_images: bool
) -> tuple[Path, dict[str, Any]]:
    """The cache file '<options hash>-<files hash>.npz' under `cache_root/folders`, and the key stored in it.

    The key holds the same hashes and the folder's path (which `cifarlab cache --prune` checks still exists).
    """
    options = f"{_CACHE_VERSION}\0{root.resolve()}\0{image_size}\0{skip_bad_images}\0{Image.__version__}"
    options_key = hashlib.sha256(options.encode()).hexdigest()[:16]
    files_key = hashlib.sha256("\n".join(listing.fingerprint).encode()).hexdigest()[:24]
    key = {"kind": "folders", "options": options_key, "files": files_key, "root": str(root.resolve())}
    return cache_root / "folders" / f"{options_key}-{files_key}.npz", key


def _read_cache(path: Path, key: dict[str, Any], splits: list[str], image_size: int) -> dict[str, np.ndarray] | None:
    """Arrays stored at `path`, or None when it is missing; an unreadable, stale or damaged file is deleted."""

    def check(arrays: dict[str, np.ndarray]) -> None:
        if arrays["notes"].dtype.kind != "U":
            raise ValueError(f"notes has dtype {arrays['notes'].dtype}")
        for name in splits:
            images, labels = arrays[f"{name}_images"], arrays[f"{name}_labels"]
            if images.dtype != np.uint8 or images.shape[1:] != (3, image_size, image_size):
                raise ValueError(f"{name}_images has dtype {images.dtype} and shape {images.shape}")
            if labels.dtype != np.int64 or labels.shape != (len(images),):
                raise ValueError(f"{name}_labels has dtype {labels.dtype} and shape {labels.shape}")
            files = arrays[f"{name}_files"]
            if files.dtype.kind != "U" or files.shape != labels.shape:
                raise ValueError(f"{name}_files has dtype {files.dtype} and shape {files.shape}")

    arrays = read_cache(path, key, check=check)
    if arrays is not None:
        arrays["notes"] = arrays["notes"].astype(str)
    return arrays


def _write_cache(path: Path, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Store `arrays` at `path` atomically and delete older cache files of the same folder and options."""
    try:
        write_cache(path, arrays, key)
        options_key = path.stem.split("-")[0]
        for stale in path.parent.glob(f"{options_key}-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as error:
        warnings.warn(
            f"could not write the image cache {path} ({error}); the folder will be decoded again next "
            f"time (set cache_dir or $CIFARLAB_HOME to a writable folder)",
            stacklevel=3,
        )


def _build_arrays(
    listing: _Listing, image_size: int, skip_bad_images: bool, workers: int, progress: bool
) -> dict[str, np.ndarray]:
    """Decode every listed image into the arrays stored in the cache."""
    _check_memory(len(listing.files), image_size)
    images, errors = _decode_files(listing.files, image_size, workers, progress)  # (N, S, S, 3)
    notes: list[str] = []
    keep = np.ones(len(listing.files), dtype=bool)
    first_bad = ""
    if errors:
        first_index, first_error = min(errors.items())
        first_bad = f"{listing.files[first_index]}: {first_error}"
        more = f" (and {len(errors) - 1} more unreadable files)" if len(errors) > 1 else ""
        if not skip_bad_images:
            raise ValueError(
                f"cannot read image {first_bad}{more}; fix or delete it, or pass --skip-bad-images "
                f"(skip_bad_images=True) to skip unreadable files"
            )
        keep[list(errors)] = False
        notes.append(f"skipped {len(errors)} unreadable images (first: {first_bad})")

    arrays: dict[str, np.ndarray] = {"notes": np.asarray(notes, dtype=str)}
    start = 0
    for name, size in listing.split_sizes.items():
        part = slice(start, start + size)
        start += size
        split_keep = keep[part]
        if not split_keep.any():
            raise ValueError(
                f"no readable images in {Path(listing.files[part.start]).parents[1]}: all {size} failed to "
                f"decode (first: {first_bad})"
            )
        split_images = images[part][split_keep] if not split_keep.all() else images[part]
        arrays[f"{name}_images"] = np.ascontiguousarray(split_images.transpose(0, 3, 1, 2))  # (N, 3, S, S)
        arrays[f"{name}_labels"] = listing.labels[part][split_keep]
        relative = [line.split("\0", 1)[0] for line in listing.fingerprint[part]]  # train/<class>/<image>
        arrays[f"{name}_files"] = np.asarray(relative, dtype=str)[split_keep]
    return arrays


def _check_memory(count: int, image_size: int) -> None:
    """Raise ValueError when the decoded images could not fit in this machine's memory (rather than MemoryError)."""
    needed = count * image_size * image_size * 3 * 2  # the decoded array, and the copy the splits are cut into
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return
    if needed > total:
        raise ValueError(
            f"decoding {count} images at {image_size}x{image_size} pixels needs about {needed / 2**30:.0f} GiB "
            f"of memory, more than this machine's {total / 2**30:.0f} GiB; use a smaller --image-size"
        )


def _decode_files(paths: list[str], image_size: int, workers: int, progress: bool) -> tuple[np.ndarray, dict[int, str]]:
    """Decode `paths` into an (N, S, S, 3) uint8 array; also return {index: error} for unreadable files."""
    images = np.zeros((len(paths), image_size, image_size, 3), dtype=np.uint8)
    errors: dict[int, str] = {}
    chunk_size = max(64, min(1024, len(paths) // (workers * 8) + 1))
    starts = range(0, len(paths), chunk_size)

    def store(start: int, result: tuple[np.ndarray, dict[int, str]], bar: Any) -> None:
        chunk, chunk_errors = result
        images[start : start + len(chunk)] = chunk
        errors.update({start + i: message for i, message in chunk_errors.items()})
        bar.update(len(chunk))

    if workers == 1 or len(paths) < _MIN_PARALLEL_FILES:
        with progress_bar(total=len(paths), desc="decoding images", unit="img", disable=not progress) as bar:
            for start in starts:
                store(start, _decode_chunk(paths[start : start + chunk_size], image_size), bar)
        return images, errors
    with _pool(workers) as pool:
        # submit before tqdm starts its monitor thread, so the workers fork from a single-threaded process
        futures = {pool.submit(_decode_chunk, paths[s : s + chunk_size], image_size): s for s in starts}
        with progress_bar(total=len(paths), desc="decoding images", unit="img", disable=not progress) as bar:
            for future in as_completed(futures):
                store(futures[future], future.result(), bar)
    return images, errors


def _pool(workers: int) -> Executor:
    """Forked processes on Linux, else threads.

    Decoding small images is mostly Python work that holds the GIL: on 2 cores, 12,000 CIFAR JPEGs took
    0.9-1.2 s in 2 forked processes against 2.6 s in 2 threads. Spawned or forkserver processes would
    first re-import torch (3.1 s in all) and need an `if __name__ == "__main__"` guard in the caller's
    script, so where fork is not the safe default (macOS, Windows) threads are the better trade.
    """
    if sys.platform == "linux":
        return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
    return ThreadPoolExecutor(max_workers=workers)


def _decode_chunk(paths: list[str], image_size: int) -> tuple[np.ndarray, dict[int, str]]:
    """Decode a list of files; unreadable ones are left black and reported as {index: error}."""
    out = np.zeros((len(paths), image_size, image_size, 3), dtype=np.uint8)
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            out[i] = decode_image(path, image_size)
        except (ValueError, OSError) as error:  # decode_image names the problem (not an image, truncated, ...)
            errors[i] = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    return out, errors
