"""Out-of-fold probabilities: K models, each trained without one fold of the images and asked about that fold.

Every image's probabilities then come from a model that never saw it, which is what confident learning needs (a
model asked about its own training images agrees with their labels, wrong ones included). Each fold is an ordinary
run directory, `OUT/folds/fold-<k>`; it resumes like any run, and its probabilities are kept beside it (`oof.npy`)
once it has finished.

A fold's run is never given the fold it judges, not even as its validation split: the trainer holds its validation
split (`FOLD_VAL_SIZE` of the training folds) out of what it is given, and that split alone fits the temperature
and, for presets that keep their best epoch, chooses the epoch. Fitted on the held-out fold, both would have learnt
from the very labels under audit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cifarlab import api
from cifarlab._io.atomic import atomic_path
from cifarlab.config import RunConfig
from cifarlab.data import Dataset, Split
from cifarlab.data.dataset import without_test
from cifarlab.inference.classifier import Classifier

FOLDS_DIR = "folds"
FOLD_VAL_SIZE = 0.05  # share of a fold run's training folds it validates on: 2,000 of CIFAR-10's 40,000 at K = 5
OOF_NAME = "oof.npy"  # (fold size, K) float32 probabilities of the held-out images, in their order in the fold


def check_audit_data(pool: Split, class_names: list[str], folds: int, where: str) -> None:
    """One-line errors for data an audit cannot fold: fewer than 2 classes, or a class smaller than `folds`."""
    if folds < 2:
        raise ValueError(f"--folds must be 2 or more (each image is judged by a model trained on the others), "
                         f"got {folds}")  # fmt: skip
    if len(class_names) < 2:
        raise ValueError(f"{where} has one class ({class_names[0]!r}); an audit compares labels, so it needs 2 or more")
    counts = torch.bincount(pool.labels.cpu(), minlength=len(class_names)).tolist()
    small = [(name, count) for name, count in zip(class_names, counts) if count < folds]
    if small:
        name, count = small[0]
        raise ValueError(f"class {name!r} of {where} has {count} training image{'s' if count != 1 else ''}; "
                         f"--folds {folds} needs at least {folds} per class (lower --folds or add images)")  # fmt: skip


def assign_folds(labels: torch.Tensor, folds: int, seed: int) -> np.ndarray:
    """Each image's fold, 0..folds-1: every class dealt out evenly over the folds after a seeded shuffle."""
    labels_np = labels.cpu().numpy()
    fold = np.empty(len(labels_np), dtype=np.int64)
    rng = np.random.default_rng(seed)
    dealt = 0  # carry the deal on from class to class, so the folds' sizes differ by at most one
    for cls in np.unique(labels_np):
        members = rng.permutation(np.nonzero(labels_np == cls)[0])
        fold[members] = (np.arange(len(members)) + dealt) % folds
        dealt += len(members)
    return fold


def fold_dataset(dataset: Dataset, pool: Split, fold: np.ndarray, k: int) -> Dataset:
    """Fold k's run data: the other folds (its validation split is held out of them) and no test split."""
    folded = dataclasses.replace(dataset, train=pool.subset(torch.from_numpy(np.nonzero(fold != k)[0])), val=None)
    return without_test(folded)  # fold k is only predicted, after the run; the test split is never read


def fold_run_dir(out: Path, k: int) -> Path:
    """Fold k's run directory."""
    return out / FOLDS_DIR / f"fold-{k}"


def out_of_fold_probabilities(
    config: RunConfig,
    dataset: Dataset,
    pool: Split,
    fold: np.ndarray,
    out: Path,
    *,
    on_fold: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, K) probabilities of every image of `pool`, each from the fold model that did not train on it.

    Folds that finished before are read back; a stopped one resumes; the rest train (config.out set per fold).
    `config.data.val_size` is the share of each fold run's training folds that it validates on (`FOLD_VAL_SIZE`).
    """
    folds = int(fold.max()) + 1
    probabilities = np.zeros((len(pool), len(dataset.class_names)), dtype=np.float32)
    for k in range(folds):
        if on_fold is not None:
            on_fold(k)
        run_dir = fold_run_dir(out, k)
        held_out = np.nonzero(fold == k)[0]
        oof_path = run_dir / OOF_NAME
        held = np.load(oof_path) if oof_path.is_file() else None
        if held is None or held.shape != (len(held_out), probabilities.shape[1]):
            data = fold_dataset(dataset, pool, fold, k)
            api.finish_run(dataclasses.replace(config, out=str(run_dir)), dataset=data, test=False)
            classifier = Classifier.load(run_dir, device=config.device, precision=config.precision)
            held = classifier.predict(pool.subset(held_out).images).numpy().astype(np.float32)
            with atomic_path(oof_path) as tmp, tmp.open("wb") as f:  # a file object: np.save adds .npy to a name
                np.save(f, held, allow_pickle=False)
        probabilities[held_out] = held
    return probabilities
