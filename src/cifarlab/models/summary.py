"""Keras-style parameter counts: BatchNorm moving statistics count as non-trainable parameters."""

from __future__ import annotations

from dataclasses import dataclass

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

    def to_dict(self) -> dict[str, int]:
        """{'total', 'trainable', 'non_trainable'}: as metrics.json records them."""
        return {"total": self.total, "trainable": self.trainable, "non_trainable": self.non_trainable}


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
