"""An exponential moving average of the weights, for short runs whose last steps are noisy."""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """Keep an EMA of a model's parameters and floating-point buffers (BatchNorm statistics too).

    Args:
        model: the model being trained.
        decay: weight of the old average at each update; the effective decay ramps up as
            min(decay, (1 + t) / (10 + t)) so the first steps do not drag the average back to the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"train.ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self._average = [t.detach().clone() for t in self._live]

    @torch.no_grad()
    def update(self) -> None:
        """Blend the live weights into the average (call after each optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._average, self._live, 1 - decay)

    def state_dict(self) -> dict[str, object]:
        """The average and its update count, saved with a resumable run."""
        return {"updates": self.updates, "average": self._average}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, object]) -> None:
        """Take back a `state_dict()`."""
        self.updates = int(state["updates"])
        torch._foreach_copy_(self._average, list(state["average"]))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the average into `model` (the same model it was built from)."""
        live = [t for t in model.state_dict().values() if t.is_floating_point()]
        torch._foreach_copy_(live, self._average)
