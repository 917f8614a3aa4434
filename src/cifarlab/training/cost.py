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
from cifarlab.evaluation.tta import VIEWS as TTA_VIEWS


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


def training_flops(config: RunConfig, train_images: int, image_size: int, num_classes: int) -> tuple[float, float]:
    """FLOPs of a run's optimiser steps: (those of the epochs at the low-resolution side, those at the full side)."""
    recipe, arch = config.train, config.arch.kwargs()
    per_epoch = recipe.steps_per_epoch * recipe.batch_size if recipe.steps_per_epoch is not None else train_images
    side = recipe.low_res_side(image_size)
    low_epochs = min(recipe.low_res_epochs, recipe.epochs) if side else 0
    low = low_epochs * image_flops(config.model, side, num_classes, arch).train if side else 0.0
    full = (recipe.epochs - low_epochs) * image_flops(config.model, image_size, num_classes, arch).train
    return per_epoch * low, per_epoch * full


def evaluation_flops(
    config: RunConfig, val_images: int, test_images: int, image_size: int, num_classes: int
) -> tuple[float, float]:
    """FLOPs of a run's evaluations: (those after every epoch, those of the final model with its TTA views)."""
    recipe = config.train
    forward = image_flops(config.model, image_size, num_classes, config.arch.kwargs()).forward
    views = TTA_VIEWS[recipe.tta]
    each_epoch = val_images * forward + (test_images * views * forward if recipe.test_each_epoch else 0)
    return recipe.epochs * each_epoch, (val_images + test_images) * views * forward


def run_cost(
    config: RunConfig, train_images: int, val_images: int, test_images: int, image_size: int = 32,
    num_classes: int = 10,
) -> RunCost:  # fmt: skip
    """The FLOPs of training `config` on a split of these sizes (after the validation split was held out).

    Args:
        config: the run's config (model, arch, epochs, batch, steps per epoch, progressive resizing, TTA).
        train_images: the train split's size, after the validation split was held out.
        val_images: the validation split's size (0: none).
        test_images: the test split's size (0: not evaluated, as in a search's trial).
        image_size: the images' side.
        num_classes: the head's outputs.
    """
    train = training_flops(config, train_images, image_size, num_classes)
    evaluation = evaluation_flops(config, val_images, test_images, image_size, num_classes)
    return RunCost(train=sum(train), evaluation=sum(evaluation))


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
