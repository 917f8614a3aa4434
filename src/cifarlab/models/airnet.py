"""AirNet: the small fast CIFAR network of the public speed-runs, rewritten for cifarlab.

The ideas are those of Keller Jordan's airbench (2024) and David Page's DAWNBench ResNet (2018): a first 2x2
convolution whose filters whiten the input patches (set from the training data, not learnt at first), three
conv-pool-BatchNorm-GELU groups, a global max-pool and a scaled linear head. BatchNorm keeps its scale at 1 and
trains only its shift, with a high momentum suited to short runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarlab.models.registry import register_model

WHITEN_KERNEL = 2


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 and a trainable shift (the speed-runs' choice)."""

    def __init__(self, channels: int, momentum: float = 0.6, eps: float = 1e-12) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class _ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, channels_in: int, channels_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _BatchNorm(channels_out, bn_momentum)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = _BatchNorm(channels_out, bn_momentum)
        self.activation = nn.GELU()
        for conv in (self.conv1, self.conv2):  # start near the identity on the channels that can carry it
            weight = conv.weight.data
            nn.init.dirac_(weight[: weight.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    """Whitening conv, three conv groups, global max-pool, linear head scaled by `head_scale`.

    Args:
        widths: output channels of the three conv groups.
        num_classes: outputs of the head.
        bn_momentum: BatchNorm momentum (PyTorch convention: weight of the new batch).
        head_scale: the logits are multiplied by this (keeps early logits small without a bias).
        image_size: accepted for a uniform model signature; the global pool makes the net size-agnostic.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (64, 256, 256),
        num_classes: int = 10,
        bn_momentum: float = 0.6,
        head_scale: float = 1 / 9,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        whiten_width = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by init_from_data; only its bias learns
        self.activation = nn.GELU()
        self.groups = nn.Sequential(
            _ConvGroup(whiten_width, widths[0], bn_momentum),
            _ConvGroup(widths[0], widths[1], bn_momentum),
            _ConvGroup(widths[1], widths[2], bn_momentum),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = head_scale
        self.num_features = widths[2]

    @torch.no_grad()
    def init_from_data(self, inputs: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalised training images (N, 3, H, W).

        The filters are the eigenvectors of the 2x2 patch covariance scaled by 1/sqrt(eigenvalue), and their
        negatives (so GELU keeps both signs); the bias starts at 0.
        """
        patches = inputs.float().unfold(2, WHITEN_KERNEL, 1).unfold(3, WHITEN_KERNEL, 1)
        patches = patches.transpose(1, 3).reshape(-1, 3 * WHITEN_KERNEL**2)  # (N * positions, 12) as (C, kh, kw)
        patches = patches - patches.mean(dim=0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).view(-1, 3, WHITEN_KERNEL, WHITEN_KERNEL)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, widths[2])."""
        x = self.groups(self.activation(self.whiten(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x)) * self.head_scale


def _three(widths: Sequence[int]) -> tuple[int, int, int]:
    """AirNet's three group widths (`arch.widths`), checked."""
    if len(widths) != 3:
        raise ValueError(f"AirNet has three conv groups: arch.widths needs 3 widths, got {list(widths)}")
    return (int(widths[0]), int(widths[1]), int(widths[2]))


@register_model
def airnet94(num_classes: int = 10, image_size: int = 32, widths: Sequence[int] = (64, 256, 256)) -> AirNet:
    """AirNet with groups of 64, 256, 256 channels (the speed-runs' 94% width)."""
    return AirNet(_three(widths), num_classes=num_classes, image_size=image_size)


@register_model
def airnet88(num_classes: int = 10, image_size: int = 32, widths: Sequence[int] = (32, 128, 128)) -> AirNet:
    """A narrower AirNet, 32, 128, 128 channels, for the shortest runs."""
    return AirNet(_three(widths), num_classes=num_classes, image_size=image_size)


@register_model
def airnet96(num_classes: int = 10, image_size: int = 32, widths: Sequence[int] = (128, 384, 384)) -> AirNet:
    """A wider AirNet, 128, 384, 384 channels, for longer runs."""
    return AirNet(_three(widths), num_classes=num_classes, image_size=image_size)
