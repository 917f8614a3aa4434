"""In-memory image datasets: uint8 tensors plus class names, and the stratified validation split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Split:
    """One split of a dataset, whole in memory.

    Attributes:
        images: (N, 3, H, W) uint8 tensor.
        labels: (N,) int64 tensor of class indices.
        files: (N,) str array of each image's file, relative to its dataset's folder; None for data that has no
            files (CIFAR-10's batches, images made in memory).
    """

    images: torch.Tensor
    labels: torch.Tensor
    files: np.ndarray | None = None

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, (self.images.dtype, self.images.shape)
        assert self.labels.dtype == torch.int64 and self.labels.shape == (len(self.images),)
        assert self.files is None or self.files.shape == (len(self.images),), self.files

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        """Return this split on `device` (a no-op when it is already there)."""
        return Split(self.images.to(device), self.labels.to(device), self.files)

    def subset(self, index: torch.Tensor | np.ndarray) -> Split:
        """Return the rows named by `index` (an index or boolean mask)."""
        index = torch.as_tensor(index, device=self.labels.device)
        files = self.files[index.cpu().numpy()] if self.files is not None else None
        return Split(self.images[index], self.labels[index], files)


@dataclass
class Dataset:
    """A labelled image dataset: train and test splits, an optional validation split, and class names."""

    class_names: list[str]
    train: Split
    test: Split
    val: Split | None = None
    source: str = ""  # where it came from, for run metadata ('cifar10' or a folder path)
    notes: list[str] = field(default_factory=list)  # warnings worth showing the user (e.g. skipped images)

    @property
    def image_size(self) -> int:
        """Side length of the (square) images."""
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def without_test(dataset: Dataset) -> Dataset:
    """The dataset with an empty test split: a search's trial or an audit's fold cannot read what it is not given."""
    return dataclasses.replace(dataset, test=dataset.test.subset(torch.zeros(0, dtype=torch.int64)))


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into train and validation parts with every class in proportion.

    The validation part takes `val_size` rows; each class contributes its share, rounded by the
    largest-remainder method so the total is exact. The same `seed` gives the same split.

    Args:
        labels: (N,) class indices.
        val_size: rows to hold out; 0 keeps everything for training.
        seed: seed of the shuffle.

    Returns:
        (train_index, val_index), both sorted int64 tensors.

    Raises:
        ValueError: if `val_size` is negative or leaves no training rows.
    """
    n = len(labels)
    if val_size < 0:
        raise ValueError(f"--val-size must be 0 or more, got {val_size}")
    if val_size >= n:
        raise ValueError(
            f"--val-size {val_size} leaves no training images (the train split has {n}); use a smaller value"
        )
    all_index = np.arange(n)
    if val_size == 0:
        return torch.from_numpy(all_index), torch.zeros(0, dtype=torch.int64)
    labels_np = labels.cpu().numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    exact = counts * (val_size / n)
    share = np.floor(exact).astype(np.int64)
    # hand the rows lost to rounding to the classes with the largest remainders
    for i in np.argsort(-(exact - share), kind="stable")[: val_size - share.sum()]:
        share[i] += 1
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls, k in zip(classes, share):
        members = all_index[labels_np == cls]
        val_parts.append(rng.permutation(members)[:k])
    val_index = np.sort(np.concatenate(val_parts))
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_index] = False
    return torch.from_numpy(all_index[train_mask]), torch.from_numpy(val_index)


def balanced_first(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of `n` rows that take the classes in turn: each class's first rows.

    A folder's test split is sorted by class, so its first `n` rows would hold one or two classes; these give every
    class the same count, to within one, until a class runs out of rows (the others then share the rest). The same
    labels give the same rows. Returned sorted (int64).
    """
    labels_np = labels.cpu().numpy()
    rank = np.empty(len(labels_np), dtype=np.int64)  # each row's place among the rows of its class
    for cls in np.unique(labels_np):
        members = np.flatnonzero(labels_np == cls)
        rank[members] = np.arange(len(members))
    order = np.lexsort((np.arange(len(labels_np)), rank))  # by place within class, then by position
    return torch.from_numpy(np.sort(order[:n]))


def validation_count(val_size: int | float, train_size: int) -> int:
    """Images a `--val-size` holds out of a train split of `train_size`: a count as it is, a fraction of it rounded.

    The seed's 0.2 of CIFAR-10's 50,000 training images is its 10,000; of an image folder of 1,400 it is 280.
    """
    return round(val_size * train_size) if isinstance(val_size, float) else int(val_size)


def with_validation(dataset: Dataset, val_size: int | float, seed: int) -> Dataset:
    """Return `dataset` with a validation split.

    A validation split the dataset already has (a `val/` folder) is kept as it is; otherwise
    `val_size` stratified rows (a count, or a fraction of train: see `validation_count`) are held out of train.
    """
    if dataset.val is not None:
        return dataset
    count = validation_count(val_size, len(dataset.train.labels))
    train_index, val_index = stratified_split(dataset.train.labels, count, seed)
    val = dataset.train.subset(val_index) if len(val_index) else None
    return Dataset(
        class_names=dataset.class_names,
        train=dataset.train.subset(train_index),
        test=dataset.test,
        val=val,
        source=dataset.source,
        notes=dataset.notes,
    )


def select_classes(
    dataset: Dataset, classes: tuple[str, ...] | None, per_class_limit: int | None, seed: int
) -> Dataset:
    """Keep only some classes (relabelled 0..k-1 in the order given) and at most N training images per class.

    Args:
        dataset: the full dataset.
        classes: class names to keep, or None for all.
        per_class_limit: training images kept per class (a seeded random choice), or None for all; the
            validation split is held out of what is kept.
        seed: seed of the choice.

    Raises:
        ValueError: for an unknown class name or a limit below 1.
    """
    if classes is None and per_class_limit is None:
        return dataset
    names = list(classes) if classes is not None else list(dataset.class_names)
    unknown = [name for name in names if name not in dataset.class_names]
    if unknown:
        known = ", ".join(dataset.class_names)
        raise ValueError(f"--classes: unknown class {', '.join(unknown)}; the data has {known}")
    if per_class_limit is not None and per_class_limit < 1:
        raise ValueError(f"--per-class-limit must be at least 1, got {per_class_limit}")
    old_index = torch.tensor([dataset.class_names.index(name) for name in names])
    relabel = torch.full((len(dataset.class_names),), -1, dtype=torch.int64)
    relabel[old_index] = torch.arange(len(names))

    def keep(split: Split, limit: int | None) -> Split:
        new_labels = relabel[split.labels.cpu()]
        rows = []
        rng = np.random.default_rng(seed)
        for label in range(len(names)):
            members = torch.nonzero(new_labels == label).flatten().numpy()
            rows.append(rng.permutation(members)[:limit] if limit is not None else members)
        index = torch.from_numpy(np.sort(np.concatenate(rows)))
        return dataclasses.replace(split.subset(index), labels=new_labels[index])

    return Dataset(
        class_names=names,
        train=keep(dataset.train, per_class_limit),
        test=keep(dataset.test, None),
        val=keep(dataset.val, None) if dataset.val is not None else None,
        source=dataset.source,
        notes=dataset.notes,
    )
