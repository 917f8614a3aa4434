"""The transfer trainer: a backbone from ImageNet or from a cifarlab run, frozen or fine-tuned, under a new head.

It is the ordinary Trainer (same loop, callbacks, History, checkpoints and run directory) with three changes:

* the model is a `transfer_net`: the backbone's weights loaded, the new head initialised, freezing applied;
* inputs are normalised as the backbone's weights expect (ImageNet mean/std, or the source run's scaling);
* with a frozen backbone and no augmentation, the features of the train and validation images are computed once
  (and cached on disk) and the epochs train the head on them. The test split still runs through the whole
  network, images in, as `cifarlab evaluate` will run it, so both print the same accuracy.

Fine-tuning (`finetune` > 0) trains the last blocks of the backbone with the head, at `backbone_lr_scale` times the
head's learning rate, on images (augmented when the recipe says so).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.config import RunConfig
from cifarlab.data.dataset import Dataset
from cifarlab.data.loader import Normalization
from cifarlab.evaluation.metrics import EvalResult
from cifarlab.inference.checkpoint import load_state, meta_path, read_checkpoint, resolve_checkpoint
from cifarlab.models.registry import create_model
from cifarlab.training.callbacks import Callback
from cifarlab.training.schedules import build_optimizer, build_scheduler
from cifarlab.training.trainer import Trainer
from cifarlab.transfer.features import (
    FeatureLoader,
    FeatureSplit,
    cached_features,
    evaluate_features,
    feature_batch_size,
)
from cifarlab.transfer.weights import IMAGENET_NORMALIZATION, PRETRAINED_URLS, pretrained_weights, vgg16_base_state

TRANSFER_MODEL = "transfer_net"  # the registered model every transfer checkpoint names


@dataclass
class BackboneSource:
    """Where a backbone comes from and what it takes to rebuild and feed it.

    Attributes:
        architecture: registered model name of the backbone (its head is dropped).
        kwargs: keyword arguments of that model.
        state: its weights, named as in that model (head excluded).
        normalization: input scaling its weights expect.
        input_size: side it must see; None = any (resized only when `--input-size` asks).
        description: one line for notes and checkpoints.
    """

    architecture: str
    kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    normalization: Normalization
    input_size: int | None
    description: str


def resolve_backbone(config: RunConfig, *, progress: bool = True) -> BackboneSource:
    """Read the backbone a transfer config names: published ImageNet weights or a cifarlab run.

    Raises:
        KeyError: for `--backbone imagenet` with a model that has no published weights.
        FileNotFoundError: for a run directory or weights file that does not exist.
        ValueError: for a file that is unreadable or not in the expected layout, or options that do not fit.
        OSError: if the weights cannot be downloaded.
    """
    transfer = config.transfer
    if transfer.backbone == "imagenet":
        if config.model not in PRETRAINED_URLS:
            raise KeyError(
                f"--backbone imagenet: no published ImageNet weights for model '{config.model}' "
                f"(available: {', '.join(PRETRAINED_URLS)}); give a cifarlab run directory instead"
            )
        path = pretrained_weights(config.model, transfer.weights, progress=progress)
        return BackboneSource(
            config.model, {}, vgg16_base_state(path), IMAGENET_NORMALIZATION, transfer.input_size,
            f"{config.model} with ImageNet weights from {path}",
        )  # fmt: skip
    try:
        weights = resolve_checkpoint(transfer.backbone or "")
    except FileNotFoundError as error:
        message = f"--backbone {transfer.backbone}: give 'imagenet' or a cifarlab run ({error})"
        raise FileNotFoundError(message) from None
    state, meta = read_checkpoint(weights)
    image_size = int(meta["image_size"])
    if transfer.input_size not in (None, image_size):
        raise ValueError(
            f"--input-size {transfer.input_size}: the backbone from {transfer.backbone} takes {image_size}-pixel "
            "images (its image size); leave --input-size unset"
        )
    mean, std = meta["normalization"]["mean"], meta["normalization"]["std"]
    return BackboneSource(
        architecture=meta["model"],
        kwargs=dict(meta.get("model_kwargs", {})),
        state={key: value for key, value in state.items() if not key.startswith("head.")},
        normalization=Normalization(tuple(mean), tuple(std)),
        input_size=image_size,
        description=f"run {weights.parent} ({meta['model']}, trained on {', '.join(meta['class_names'])})",
    )


class TransferTrainer(Trainer):
    """Train a new head on a backbone, frozen (features cached) or fine-tuned; see the module docstring.

    Args:
        config: a resolved run configuration with `transfer.backbone` set.
        dataset: the data of the new task (its own classes).
        run_dir: where checkpoints go while training.
        callbacks: extra callbacks.
    """

    def __init__(
        self,
        config: RunConfig,
        dataset: Dataset,
        *,
        run_dir: str | Path | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        if config.transfer.backbone is None:
            raise ValueError("TransferTrainer needs transfer.backbone ('imagenet' or a run directory)")
        self.source = resolve_backbone(config, progress=not config.quiet)
        # config.json then names the backbone's real architecture (e.g. the source run's model)
        super().__init__(replace(config, model=self.source.architecture), dataset, run_dir=run_dir, callbacks=callbacks)
        self.transfer = self.config.transfer
        scaling = f"mean {self.normalization.mean}, std {self.normalization.std}"
        self.notes.append(f"backbone: {self.source.description}; inputs normalised as it expects ({scaling})")
        self.cached = self.transfer.finetune == 0 and not self.recipe.augment.enabled
        if self.cached:
            self._use_cached_features()
            return
        if self.transfer.finetune == 0:
            self.notes.append("augmentation on: the frozen backbone runs on every augmented batch (no feature cache)")
        backbone = [(self.model.backbone.parameters(), self.transfer.backbone_lr_scale)]
        self.optimizer = build_optimizer(self.model, self.recipe, lr_scales=backbone)  # the head's lr first
        self.scheduler = build_scheduler(self.optimizer, self.recipe, len(self.train_loader))

    def build_model(self) -> nn.Module:
        """The transfer_net: backbone weights loaded, new head for this dataset's classes, freezing applied."""
        self.normalization = self.source.normalization  # the weights', used by the loader and saved in checkpoints
        self.model_kwargs = {
            "num_classes": len(self.class_names),
            "image_size": self.image_size,
            "backbone": self.source.architecture,
            "backbone_kwargs": self.source.kwargs,
            "hidden": list(self.config.transfer.head),
            "dropout": self.config.transfer.head_dropout,
            "input_size": self.source.input_size,
        }
        model = create_model(TRANSFER_MODEL, **self.model_kwargs)
        load_state(model.backbone, self.source.state, self.source.description)
        self.source.state = {}  # copied into the model: let the file's tensors (or its memory map) go
        model.freeze(self.config.transfer.finetune, self.config.transfer.batchnorm)
        return model

    def _use_cached_features(self) -> None:
        """Swap the image batches for cached backbone features: the epochs then train the head alone."""
        started = time.perf_counter()
        side = self.model.input_size or self.image_size
        options = {
            "batch_size": feature_batch_size(self.recipe.eval_batch_size, side),
            "precision": self.precision,
            "channels_last": self.config.channels_last,
            "progress": not self.config.quiet,
        }
        train, hit = cached_features(self.model, self.train_split, self.normalization, desc="features train", **options)
        hits = [hit]
        self.train_loader = FeatureLoader(
            FeatureSplit(train, self.train_split.labels),
            self.recipe.batch_size,
            shuffle=True,
            steps_per_epoch=self.recipe.steps_per_epoch,
            seed=self.config.seed,
        )  # as many steps per epoch as the image loader it replaces: the scheduler stays valid
        if self.val_split is not None:
            val, hit = cached_features(self.model, self.val_split, self.normalization, desc="features val", **options)
            self.val_split = FeatureSplit(val, self.val_split.labels)
            hits.append(hit)
        self.forward_model = self.model.classify
        seconds = time.perf_counter() - started
        how = "read from the cache" if all(hits) else f"computed in {seconds:.1f}s and cached"
        count = len(self.train_split) + (len(self.val_split) if self.val_split is not None else 0)
        self.notes.append(f"backbone frozen: features of {count} train/val images {how}; the head trains on them")

    def evaluate(self, split: Any, tta: int = 0, desc: str | None = None) -> EvalResult:
        """Evaluate on cached features (FeatureSplit), or on images through the whole network."""
        if isinstance(split, FeatureSplit):
            return evaluate_features(
                self.model, split.to(self.device), len(self.class_names),
                batch_size=self.recipe.eval_batch_size, precision=self.precision,
            )  # fmt: skip
        if not self.cached:
            return super().evaluate(split, tta, desc)
        head_only, self.forward_model = self.forward_model, self.model
        try:
            return super().evaluate(split, tta, desc)
        finally:
            self.forward_model = head_only

    def checkpoint_meta(self, metrics: dict[str, Any] | None = None, epoch: int | None = None) -> dict[str, Any]:
        """The base metadata, naming the transfer_net and the backbone's origin."""
        meta = super().checkpoint_meta(metrics, epoch)
        meta["model"] = TRANSFER_MODEL
        meta["backbone"] = self.source.description
        return meta


def preset_model(config: RunConfig) -> nn.Module:
    """The network a run config trains, as `cifarlab presets` counts it (random weights, nothing downloaded).

    A transfer config gives its transfer_net with the backbone frozen as `finetune` says, so Keras-style counts
    show the frozen backbone as non-trainable; it is built on the meta device (no memory, no initialisation).
    """
    transfer = config.transfer
    if transfer.backbone is None:
        return create_model(config.model, **config.arch.kwargs())
    architecture, kwargs, input_size = config.model, {}, transfer.input_size
    if transfer.backbone != "imagenet":
        meta = json.loads(meta_path(resolve_checkpoint(transfer.backbone)).read_text())
        architecture, kwargs, input_size = meta["model"], meta.get("model_kwargs", {}), meta["image_size"]
    with torch.device("meta"):
        net = create_model(
            TRANSFER_MODEL, backbone=architecture, backbone_kwargs=kwargs,
            hidden=list(transfer.head), dropout=transfer.head_dropout, input_size=input_size,
        )  # fmt: skip
    net.freeze(transfer.finetune, transfer.batchnorm)
    return net
