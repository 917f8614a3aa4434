"""Backbone features computed once and cached on disk, and the batches and evaluation that use them.

A frozen backbone maps each image to the same vector at every epoch, so, as the seed's PROYECTO 10 does with
`model_vgg16_final.predict`, the features are computed once, in inference mode, and the head trains on them. The
cache file is keyed by everything the vectors depend on: the backbone's architecture and weights, the images
and labels, the input size, the normalisation, and the device type, precision and memory format (numerics).
Anything else changed, and the key changes with it. Files live in `$CIFARLAB_HOME/features/` and are written
atomically as safetensors whose header holds the key and the arrays' sha256, so a stale or damaged file is
deleted and computed again (`read_cache`); `cifarlab cache --prune` deletes the ones not used for a while.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifarlab._download import cache_home
from cifarlab._io.cache_file import read_cache, write_cache
from cifarlab.data.dataset import Split
from cifarlab.data.loader import BatchIndices, Normalization
from cifarlab.device import autocast
from cifarlab.evaluation.metrics import EvalResult, confusion_matrix, predict_logits
from cifarlab.models.transfer_net import TransferNet

FEATURE_CACHE_VERSION = 1  # bump when extraction changes, so old cache files stop matching


@dataclass
class FeatureSplit:
    """Backbone features of one split: (N, F) float32 and their (N,) int64 labels."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> FeatureSplit:
        """This split on `device`."""
        return FeatureSplit(self.features.to(device), self.labels.to(device))


def tensor_digest(hasher: hashlib._Hash, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes to `hasher`."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    hasher.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    hasher.update(memoryview(flat.view(torch.uint8).numpy()))


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's architecture (its repr) and of every tensor of its state."""
    hasher = hashlib.sha256(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(name.encode())
        tensor_digest(hasher, tensor)
    return hasher.hexdigest()


def split_fingerprint(split: Split) -> str:
    """sha256 of a split's images and labels."""
    hasher = hashlib.sha256()
    tensor_digest(hasher, split.images)
    tensor_digest(hasher, split.labels)
    return hasher.hexdigest()


def feature_batch_size(eval_batch_size: int, side: int) -> int:
    """Images per extraction batch: `eval_batch_size` at 32x32, fewer for bigger inputs (same activation memory)."""
    return max(8, eval_batch_size * 32 * 32 // (side * side))


def cached_features(
    net: TransferNet,
    split: Split,
    normalization: Normalization,
    *,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
    cache_dir: str | Path | None = None,
    desc: str = "features",
    progress: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Backbone features of `split`, read from the cache when they were computed before.

    Args:
        net: the model whose (frozen) backbone computes the features.
        split: the images, on the device that computes them.
        normalization: input scaling applied before the backbone.
        batch_size: images per extraction batch.
        precision: 'bf16' or 'fp32' (part of the key: the vectors differ).
        channels_last: memory format of the inputs (part of the key).
        cache_dir: cache root; None = `$CIFARLAB_HOME` (default ~/.cache/cifarlab).
        desc: progress bar label.
        progress: show a progress bar while computing.

    Returns:
        ((N, F) float32 features on the split's device, True when they came from the cache).
    """
    device = split.images.device
    key = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": module_fingerprint(net.backbone),
        "input_size": net.input_size,
        "data": split_fingerprint(split),
        "normalization": normalization.to_dict(),
        "numerics": [device.type, precision, channels_last],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
    path = Path(cache_dir) if cache_dir is not None else cache_home()
    path = path / "features" / f"{digest}.safetensors"
    features = _read_cache(path, key, split)
    if features is not None:
        return features.to(device), True
    # the backbone's features, batch by batch in inference mode, as any prediction
    features = predict_logits(
        net, split, normalization, batch_size=batch_size, precision=precision, channels_last=channels_last,
        forward=net.extract, desc=desc, progress=progress,
    )  # fmt: skip
    arrays = {"features": features.float().cpu().numpy(), "labels": split.labels.cpu().numpy()}
    try:
        write_cache(path, arrays, key)
    except OSError as error:  # the features are fine; only the next run computes them again
        warnings.warn(f"could not write the feature cache {path} ({error}); set $CIFARLAB_HOME to a writable "
                      "folder", stacklevel=2)  # fmt: skip
    return features, False


def _read_cache(path: Path, key: dict[str, Any], split: Split) -> torch.Tensor | None:
    """Cached features for `split`, or None when missing; a stale, damaged or ill-fitting file is deleted."""

    def check(arrays: dict[str, np.ndarray]) -> None:
        features, labels = arrays["features"], arrays["labels"]
        if features.ndim != 2 or len(features) != len(split) or not np.array_equal(labels, split.labels.cpu().numpy()):
            raise ValueError(f"holds {tuple(features.shape)} features for {len(split)} images")

    arrays = read_cache(path, key, check=check)
    return torch.from_numpy(arrays["features"]) if arrays is not None else None


class FeatureLoader:
    """(features, labels) batches of a FeatureSplit: shuffled passes, or `steps_per_epoch` from an endless stream."""

    def __init__(
        self, split: FeatureSplit, batch_size: int, *, shuffle: bool = True, steps_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:  # fmt: skip
        if len(split) == 0:
            raise ValueError("cannot load batches from an empty split")
        self.split = split
        generator = torch.Generator(device=split.features.device)
        generator.manual_seed(seed)
        self.indices = BatchIndices(len(split), batch_size, generator, shuffle=shuffle, steps_per_epoch=steps_per_epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def state_dict(self) -> dict[str, Any]:
        """The shuffle state, for resuming."""
        return self.indices.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`."""
        self.indices.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in self.indices:
            yield self.split.features[index], self.split.labels[index]


@torch.no_grad()
def evaluate_features(
    net: TransferNet, split: FeatureSplit, num_classes: int, *, batch_size: int = 1000, precision: str = "fp32"
) -> EvalResult:
    """Loss, accuracy and confusion matrix of the new head on precomputed features."""
    was_training = net.training
    net.eval()
    with autocast(split.features.device, precision):
        logits = torch.cat([net.classify(chunk).float() for chunk in split.features.split(batch_size)])
    net.train(was_training)
    predictions = logits.argmax(dim=1)
    return EvalResult(
        loss=F.cross_entropy(logits, split.labels).item(),
        accuracy=(predictions == split.labels).float().mean().item(),
        confusion=confusion_matrix(predictions, split.labels, num_classes),
        probabilities=logits.softmax(dim=1).cpu(),
    )
