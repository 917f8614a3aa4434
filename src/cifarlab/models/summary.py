"""Keras-style parameter counts: BatchNorm moving statistics count as non-trainable parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts as Keras' `model.summary()` prints them."""

    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.trainable + self.non_trainable


def count_params(model: nn.Module) -> ParamCounts:
    """Count parameters the way Keras does.

    Trainable: parameters with `requires_grad`. Non-trainable: frozen parameters plus BatchNorm's
    running mean and variance (PyTorch buffers, Keras non-trainable weights); `num_batches_tracked` is
    bookkeeping Keras does not have, so it is left out.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(
        buf.numel()
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for name, buf in module.named_buffers(recurse=False)
        if name in ("running_mean", "running_var") and buf is not None
    )
    return ParamCounts(trainable=trainable, non_trainable=frozen + stats)


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int = 32, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass of one image through the convolutions and Dense layers.

    What the rest costs (activations, pooling, BatchNorm) is small beside them for the networks here. Used to
    estimate how long a run will take from the speed measured on another one.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.weight[0].numel()  # in_channels/groups x kh x kw
        total += output[0].numel() * kernel

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
