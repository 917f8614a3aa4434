"""The seed's Keras Sequential CNNs (PROYECTO 1-9), rebuilt layer for layer in PyTorch.

Keras semantics kept: 3x3 'same' convolutions with ReLU, 2x2 max-pooling, Dropout, then
BatchNormalization (momentum 0.99 in Keras = 0.01 in PyTorch, epsilon 1e-3), glorot-uniform kernels
and zero biases, Flatten in channels-last (H, W, C) order, and a Dense(10) softmax output. The model
returns logits: softmax lives in the loss (cross-entropy) and in `predict`, which is the same function.

Speed, same function: Dropout draws hashed masks (`fast_dropout`), and in training each block's max-pool, ReLU,
Dropout and BatchNorm run as one fused chain (`pool_chain`); `set_fusion(model, False)` runs them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cifarlab.models.fast_dropout import Dropout
from cifarlab.models.pool_chain import pool_chain
from cifarlab.models.registry import register_model

KERAS_BN_MOMENTUM = 0.01  # Keras momentum=0.99 weights the old statistic; PyTorch's momentum weights the new one
KERAS_BN_EPSILON = 1e-3


class ChannelsLastFlatten(nn.Module):
    """Flatten (B, C, H, W) in Keras' (H, W, C) order, so Dense weights line up with a Keras model's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.permute(0, 2, 3, 1).flatten(1)


class KerasFeatures(nn.Sequential):
    """The conv blocks: an `nn.Sequential` (same layers, same state_dict keys) with fused pooling chains.

    While `fuse` is True each block's MaxPool2d -> ReLU -> [Dropout] -> [BatchNorm2d] runs through `pool_chain`.
    """

    fuse: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        layers = list(self)
        i = 0
        while i < len(layers):
            chain = self._chain_at(layers, i) if self.fuse else None
            if chain is None:
                x = layers[i](x)
                i += 1
                continue
            pool, dropout, norm, i = chain
            x = pool_chain(x, pool, dropout, norm)
        return x

    @staticmethod
    def _chain_at(layers: list[nn.Module], i: int) -> tuple[nn.Module, nn.Module | None, nn.Module | None, int] | None:
        """(pool, dropout, norm, index after the chain) when layers[i:] start with MaxPool2d, ReLU; else None."""
        if not (isinstance(layers[i], nn.MaxPool2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)):
            return None
        pool, i = layers[i], i + 2
        dropout = norm = None
        if i < len(layers) and isinstance(layers[i], Dropout):
            dropout, i = layers[i], i + 1
        if i < len(layers) and isinstance(layers[i], nn.BatchNorm2d):
            norm, i = layers[i], i + 1
        return pool, dropout, norm, i


def set_fusion(model: nn.Module, fuse: bool) -> int:
    """Run the Keras CNNs' pool/ReLU/Dropout/BatchNorm chains fused (True) or module by module (False).

    Returns:
        how many feature stacks were switched.
    """
    stacks = [m for m in model.modules() if isinstance(m, KerasFeatures)]
    for stack in stacks:
        stack.fuse = fuse
    return len(stacks)


class KerasCNN(nn.Module):
    """Conv blocks, then Dense layers, then a Dense softmax head, as in the seed's Sequential models.

    Each block is `convs` 3x3 convolutions with ReLU, a 2x2 max-pool, then Dropout and BatchNormalization
    when asked for (that order, as the seed writes it). Each Dense layer is followed by the same Dropout and
    BatchNormalization.

    Args:
        blocks: (filters, number of convs) for each block.
        dense: units of each hidden Dense layer.
        num_classes: outputs of the head.
        dropout: drop probability after each block and hidden Dense layer; 0 = no Dropout layers.
        batchnorm: add BatchNormalization after each block and hidden Dense layer.
        image_size: input side length (the Flatten size depends on it).
        in_channels: input channels.
    """

    def __init__(
        self,
        blocks: Sequence[tuple[int, int]],
        dense: Sequence[int],
        num_classes: int = 10,
        dropout: float = 0.0,
        batchnorm: bool = False,
        image_size: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for filters, convs in blocks:
            for _ in range(convs):
                layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
                channels = filters
            # ReLU and a 2x2 max-pool commute exactly (relu(max(x)) = max(relu(x))): pooling first gives the same
            # values and gradients while the memory-bound ReLU, forward and backward, touches a quarter of the data
            layers[-1:] = [nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            side //= 2
            layers += self._regularizers(nn.BatchNorm2d, channels, dropout, batchnorm)
        if side < 1:
            raise ValueError(f"image size {image_size} is too small for {len(blocks)} pooling blocks")
        self.features = KerasFeatures(*layers)
        self.flatten = ChannelsLastFlatten()
        neck: list[nn.Module] = []
        width = channels * side * side
        for units in dense:
            neck += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            neck += self._regularizers(nn.BatchNorm1d, units, dropout, batchnorm)
            width = units
        self.neck = nn.Sequential(*neck)
        self.head = nn.Linear(width, num_classes)
        self.num_features = width
        self.reset_parameters()

    @staticmethod
    def _regularizers(norm: type[nn.Module], width: int, dropout: float, batchnorm: bool) -> list[nn.Module]:
        """Dropout then BatchNormalization, the seed's order."""
        layers: list[nn.Module] = []
        if dropout > 0:
            layers.append(Dropout(dropout))
        if batchnorm:
            layers.append(norm(width, eps=KERAS_BN_EPSILON, momentum=KERAS_BN_MOMENTUM))
        return layers

    def reset_parameters(self) -> None:
        """Keras initialisation: glorot-uniform kernels, zero biases, BatchNorm gamma 1 and beta 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # same fans as Keras: in*k*k and out*k*k
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features): everything before the softmax head."""
        return self.neck(self.flatten(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


_P2_BLOCKS = ((32, 2), (64, 2), (128, 2))
_P6_BLOCKS = ((64, 2), (128, 2), (256, 2))
_P7_BLOCKS = ((128, 2), (256, 2), (512, 2))
_ARCH_OPTIONS = ("widths", "convs", "dropout", "bn", "dense")


def seed_cnn(
    blocks: Sequence[tuple[int, int]],
    dense: Sequence[int],
    num_classes: int,
    image_size: int,
    *,
    dropout: float = 0.0,
    batchnorm: bool = False,
    arch: dict[str, Any],
) -> KerasCNN:
    """A seed step's network, its shape replaced where `arch` (see `ArchConfig`) says.

    `widths` sets the stages (each keeps its step's convs, or the last stage's when there are more); `convs`,
    `dropout`, `bn` and `dense` apply to every stage and hidden Dense layer.

    Raises:
        ValueError: for an option the seed's CNNs do not take.
    """
    unknown = sorted(set(arch) - set(_ARCH_OPTIONS))
    if unknown:
        raise ValueError(f"the seed's CNNs take arch options {', '.join(_ARCH_OPTIONS)}; not {', '.join(unknown)}")
    widths = arch.get("widths") or [filters for filters, _ in blocks]
    convs = [arch.get("convs") or blocks[min(i, len(blocks) - 1)][1] for i in range(len(widths))]
    return KerasCNN(
        list(zip(widths, convs)),
        arch.get("dense", dense),
        num_classes,
        dropout=arch.get("dropout", dropout),
        batchnorm=arch.get("bn", batchnorm),
        image_size=image_size,
    )


@register_model
def proyecto1(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 1: two conv/pool stages (32, 64) and Dense(64); 282,250 parameters."""
    return seed_cnn(((32, 1), (64, 1)), (64,), num_classes, image_size, arch=arch)


@register_model
def proyecto2(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 2: three double-conv stages (32, 64, 128) and Dense(128); 550,570 parameters."""
    return seed_cnn(_P2_BLOCKS, (128,), num_classes, image_size, arch=arch)


@register_model
def proyecto3(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 3: P2 with Dropout 0.3 after each stage and two Dense(128); 567,082 parameters."""
    return seed_cnn(_P2_BLOCKS, (128, 128), num_classes, image_size, dropout=0.3, arch=arch)


@register_model
def proyecto4(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 4: P2 with Dropout 0.3 + BatchNormalization and one Dense(128); 551,978 parameters."""
    return seed_cnn(_P2_BLOCKS, (128,), num_classes, image_size, dropout=0.3, batchnorm=True, arch=arch)


@register_model
def proyecto5(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 5: P4 with Dense(256); 816,042 parameters."""
    return seed_cnn(_P2_BLOCKS, (256,), num_classes, image_size, dropout=0.3, batchnorm=True, arch=arch)


@register_model
def proyecto6(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 6: stages of 64, 128, 256 filters and Dense(512); 3,252,042 parameters.

    The seed's listing stops before the output layer; the Dense(10) softmax that every other step has is added.
    """
    return seed_cnn(_P6_BLOCKS, (512,), num_classes, image_size, dropout=0.3, batchnorm=True, arch=arch)


@register_model
def proyecto7(num_classes: int = 10, image_size: int = 32, **arch: Any) -> KerasCNN:
    """PROYECTO 7 (and 8): stages of 128, 256, 512 filters, Dropout 0.5, Dense(512); 8,781,962 parameters."""
    return seed_cnn(_P7_BLOCKS, (512,), num_classes, image_size, dropout=0.5, batchnorm=True, arch=arch)
