"""Optimisers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.config import TrainConfig


def build_optimizer(model: nn.Module, recipe: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser the recipe names, over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, eps=recipe.adam_epsilon, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay
    )


def lr_factor(step: int, total_steps: int, recipe: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based)."""
    if recipe.schedule == "constant":
        return 1.0
    warmup = recipe.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1.0, total_steps - warmup))


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following `lr_factor`."""
    total = recipe.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, recipe, steps_per_epoch))
