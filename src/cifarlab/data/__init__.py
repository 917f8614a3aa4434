"""Data: the official CIFAR-10, image folders, the validation split and device-resident batches."""

from __future__ import annotations

from pathlib import Path

from cifarlab.data.dataset import Dataset, Split, stratified_split, with_validation


def load_dataset(
    source: str = "cifar10",
    *,
    data_dir: str | None = None,
    image_size: int = 32,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> Dataset:
    """Load a dataset by name or path.

    Args:
        source: 'cifar10' for the official archive (downloaded and cached unless `data_dir` holds it), or
            the path of an image folder with train/ and test/ (optional val/), one subfolder per class.
        data_dir: for 'cifar10', a folder already holding the archive or cifar-10-batches-py/.
        image_size: side that image-folder images are resized to.
        skip_bad_images: warn about unreadable images instead of stopping.
        progress: show progress bars.

    Raises:
        FileNotFoundError: if `source` is neither 'cifar10' nor an existing folder.
    """
    if source == "cifar10":
        from cifarlab.data.cifar10 import load_cifar10

        return load_cifar10(data_dir, progress=progress)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {source}: no such folder; give 'cifar10' or an image folder with train/ and test/"
        )
    from cifarlab.data.folder import load_image_folder

    return load_image_folder(root, image_size=image_size, skip_bad_images=skip_bad_images, progress=progress)


__all__ = ["Dataset", "Split", "load_dataset", "stratified_split", "with_validation"]
