"""Optimisers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cifarlab.config import TrainConfig
from cifarlab.training.muon import Muon


def build_optimizer(
    model: nn.Module, recipe: TrainConfig, lr_scales: Sequence[tuple[Iterable[nn.Parameter], float]] | None = None
) -> torch.optim.Optimizer:
    """The optimiser the recipe names, over the model's trainable parameters.

    Args:
        model: the network; its parameters with `requires_grad` are trained.
        recipe: optimiser, lr, momentum, weight decay; `bias_lr_scale` multiplies the lr of 1-D parameters
            (SGD and muon), and muon trains the 4-D conv filters with `muon_lr` and `muon_momentum`.
        lr_scales: (parameters, factor) pairs scaling the lr of some parameters (e.g. a fine-tuned backbone);
            parameters not named train at factor 1. The first group holds factor-1 parameters, so
            `param_groups[0]['lr']` is the recipe's lr.
    """
    factors: dict[int, float] = {}
    for params, factor in lr_scales or ():
        factors.update((id(p), factor) for p in params)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, False): []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        orthogonal = recipe.optimizer == "muon" and p.ndim == 4
        factor = factors.get(id(p), 1.0)
        if p.ndim == 1 and recipe.optimizer != "adam":
            factor *= recipe.bias_lr_scale
        groups.setdefault((factor, orthogonal), []).append(p)
    param_groups: list[dict[str, Any]] = []
    for (factor, orthogonal), params in groups.items():
        if orthogonal:
            param_groups.append({"params": params, "lr": recipe.muon_lr * factor, "momentum": recipe.muon_momentum,
                                 "orthogonal": True})  # fmt: skip
        elif params or not param_groups:
            param_groups.append({"params": params, "lr": recipe.lr * factor})
    if recipe.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=recipe.lr, eps=recipe.adam_epsilon, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "muon":
        return Muon(param_groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                    weight_decay=recipe.weight_decay)  # fmt: skip
    return torch.optim.SGD(
        param_groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay
    )


def lr_factor(
    step: int, total_steps: int, recipe: TrainConfig, steps_per_epoch: int, progress: float | None = None
) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based).

    `warmup_linear` rises over `warmup_epochs` of steps, then decays linearly to 0 at the last step; for a run by
    the clock (`progress`: the share of `train.duration` spent) the decay reaches 0 when the time runs out, from
    the share of the planned steps that warmup takes.
    """
    if recipe.schedule == "constant":
        return 1.0
    warmup = recipe.warmup_epochs * steps_per_epoch
    if progress is not None:
        rise = (step + 1) / warmup if step < warmup else 1.0
        share = min(warmup / max(1, total_steps), 0.5)
        return max(0.0, min(rise, (1.0 - progress) / (1.0 - share)))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1.0, total_steps - warmup))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    recipe: TrainConfig,
    steps_per_epoch: int,
    progress: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following `lr_factor`; `progress` reads a clock for a run by the clock."""
    total = recipe.epochs * steps_per_epoch
    if progress is None:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, recipe, steps_per_epoch)
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, recipe, steps_per_epoch, progress())
    )
