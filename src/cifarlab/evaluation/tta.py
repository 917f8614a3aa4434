"""Test-time augmentation: average the logits over mirrored and shifted views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VIEWS = {0: 1, 1: 2, 2: 6}  # views averaged at each level
WORDS = {0: "no test-time augmentation", 1: "test-time augmentation with the mirror",
         2: "test-time augmentation with the mirror and 1-pixel shifts"}  # fmt: skip


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (B, C, H, W) by (dy, dx) pixels, repeating the edge (reflect padding of 1)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


class TTA(nn.Module):
    """Wrap a classifier so its logits are averaged over several views.

    Level 0 is the model alone; level 1 adds the horizontal mirror; level 2 adds, for the image and its mirror,
    one-pixel translations up-left and down-right (the views the speed-run recipes use).
    """

    def __init__(self, model: nn.Module, level: int) -> None:
        super().__init__()
        if level not in (0, 1, 2):
            raise ValueError(f"train.tta must be 0, 1 or 2; got {level}")
        self.model = model
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K) averaged logits."""
        if self.level == 0:
            return self.model(x)
        views = [x, x.flip(-1)]
        if self.level == 2:
            views += [_shift(v, d, d) for v in views[:2] for d in (-1, 1)]
        logits = [self.model(v) for v in views]
        return torch.stack([v.float() for v in logits]).mean(dim=0)
