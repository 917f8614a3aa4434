"""What a run costs in floating-point operations: a figure that does not depend on the machine.

A recipe's cost is counted the way the trainer spends it: every optimiser step (forward and backward, at the
image side of its epoch: progressive resizing trains the first epochs smaller), the validation split after every
epoch, and the final evaluations of the validation and test splits with the recipe's test-time augmentation
views. FLOPs are the convolutions' and matrix products' multiply-adds times two, as `torch.utils.flop_counter`
counts them (elementwise layers, pooling and normalisation are left out: they are memory traffic, not arithmetic).
The network is built on the meta device, so counting costs no memory and no arithmetic.

`cifarlab tune --frontier` minimises this cost against validation accuracy, and `train --budget` converts a
machine's measured speed into the cost it can afford.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cifarlab.config import RunConfig
from cifarlab.data import Dataset
from cifarlab.data.dataset import select_classes, with_validation

TTA_VIEWS = {0: 1, 1: 2, 2: 6}  # views test-time augmentation averages at each level (cifarlab.evaluation.tta)


@dataclass(frozen=True)
class ImageFlops:
    """FLOPs of one image through a network at one side: a training step's share, and one forward pass."""

    train: float  # forward and backward
    forward: float


@dataclass(frozen=True)
class RunCost:
    """A run's FLOPs, split into what trains and what evaluates."""

    train: float  # the optimiser steps of every epoch
    evaluation: float  # validation after each epoch, then the final validation and test evaluations (TTA views)

    @property
    def total(self) -> float:
        """Everything the run computes."""
        return self.train + self.evaluation

    def to_dict(self) -> dict[str, float]:
        """The figures, and their total, for JSON records."""
        return {**asdict(self), "total": self.total}


def image_flops(model: str, size: int, num_classes: int = 10, arch: dict[str, Any] | None = None) -> ImageFlops:
    """FLOPs per image of registered `model` (with `arch` options, e.g. widths) on `size`x`size` inputs."""
    return _image_flops(model, size, num_classes, json.dumps(arch or {}, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _image_flops(model: str, size: int, num_classes: int, arch_json: str) -> ImageFlops:
    from torch.utils.flop_counter import FlopCounterMode

    from cifarlab.models.registry import create_model

    batch = 2  # BatchNorm in training mode needs more than one value per channel
    with torch.device("meta"):
        network = create_model(model, num_classes=num_classes, image_size=size, **json.loads(arch_json))
        inputs = torch.zeros(batch, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        network.train()
        network(inputs).sum().backward()
    train = counter.get_total_flops() / batch
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network.eval()
        network(inputs)
    return ImageFlops(train=float(train), forward=float(counter.get_total_flops() / batch))


def run_cost(
    config: RunConfig, train_images: int, val_images: int, test_images: int, image_size: int = 32,
    num_classes: int = 10, epochs: float | None = None,
) -> RunCost:  # fmt: skip
    """The FLOPs of training `config` on a split of these sizes (after the validation split was held out).

    Args:
        config: the run's config (model, arch, epochs, batch, steps per epoch, progressive resizing, TTA).
        train_images: the train split's size, after the validation split was held out.
        val_images: the validation split's size (0: none).
        test_images: the test split's size (0: not evaluated, as in a search's trial).
        image_size: the images' side.
        num_classes: the head's outputs.
        epochs: count this many epochs instead of `config.train.epochs` (a fraction counts part of the last).
    """
    recipe = config.train
    arch = config.arch.kwargs()
    full = image_flops(config.model, image_size, num_classes, arch)
    low_side = recipe.low_res_size if recipe.low_res_size and recipe.low_res_size < image_size else None
    low = image_flops(config.model, low_side, num_classes, arch) if low_side else full
    per_epoch = recipe.steps_per_epoch * recipe.batch_size if recipe.steps_per_epoch is not None else train_images
    epochs = float(recipe.epochs if epochs is None else epochs)
    low_epochs = min(float(recipe.low_res_epochs if low_side else 0), epochs)
    train = per_epoch * (low_epochs * low.train + (epochs - low_epochs) * full.train)
    views = TTA_VIEWS[recipe.tta]
    each_epoch = val_images * full.forward + (test_images * views * full.forward if recipe.test_each_epoch else 0)
    final = (val_images + test_images) * views * full.forward
    return RunCost(train=train, evaluation=epochs * each_epoch + final)


@dataclass(frozen=True)
class DataSizes:
    """The splits a run of some data trains and evaluates on (after --classes and the validation hold-out)."""

    source: str
    train: int
    val: int
    test: int  # the test split as loaded: what a user's run of the recipe evaluates at its end
    image_size: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        """For JSON records (front.json's `data`)."""
        return asdict(self)


def data_sizes(config: RunConfig, dataset: Dataset) -> DataSizes:
    """The split sizes the trainer would make of `dataset` for `config` (its class selection and hold-out)."""
    data = select_classes(dataset, config.data.classes, config.data.per_class_limit, config.seed)
    split = with_validation(data, config.data.val_size, config.seed)
    val = len(split.val) if split.val is not None else 0
    return DataSizes(str(dataset.source), len(split.train), val, len(split.test), int(dataset.image_size),
                     len(split.class_names))  # fmt: skip


def recipe_cost(config: RunConfig, sizes: DataSizes) -> RunCost:
    """The FLOPs of training and evaluating `config` on splits of these sizes."""
    return run_cost(config, sizes.train, sizes.val, sizes.test, sizes.image_size, sizes.classes)
