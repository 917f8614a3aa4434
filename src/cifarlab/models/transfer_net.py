"""TransferNet: the layers of one model up to its classifier (the backbone) under a new head.

The backbone is any registered model with `forward_features` (everything before its classifier), `head` (its
final Linear) and `num_features`; its head is replaced by an identity (its weights are not kept). The new head is
Keras-style Dense layers (ReLU, then Dropout) and a final Linear. The checkpoint records the backbone's registered
name and keyword arguments, so `create_model('transfer_net', **model_kwargs)` rebuilds the exact architecture and
the weights load into it.

Freezing is state, not architecture: `freeze(n)` makes the backbone's last `n` blocks trainable and everything
before them frozen (no gradients, kept in inference mode), and `train()` respects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.models.fast_dropout import Dropout
from cifarlab.models.registry import create_model, register_model

BatchNormMode = Literal["frozen", "train"]


class TransferNet(nn.Module):
    """A backbone (a model without its classifier) and a new head.

    Args:
        backbone: a model with `forward_features`, `head` and `num_features`; its head becomes `nn.Identity`.
        num_classes: outputs of the new head.
        hidden: widths of the hidden Dense layers of the new head, each followed by ReLU and Dropout.
        dropout: drop probability after each hidden Dense layer (0 = no Dropout layers).
        input_size: side the images are resized to (bilinear) before the backbone; None = as given.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 10,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if not all(hasattr(backbone, name) for name in ("forward_features", "head", "num_features")):
            name = type(backbone).__name__
            raise ValueError(f"{name} cannot serve as a backbone: it needs forward_features, head and num_features")
        backbone.head = nn.Identity()
        self.backbone = backbone
        self.input_size = input_size
        layers: list[nn.Module] = []
        width = int(backbone.num_features)
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        self.neck = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.num_features = width
        self._eval_modules: list[nn.Module] = []  # frozen parts, kept in inference mode by train()
        for module in [*self.neck, self.head]:
            if isinstance(module, nn.Linear):  # Keras' Dense defaults, as in the seed's head
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, F) backbone features (resized to `input_size` first)."""
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.backbone.forward_features(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) backbone features -> (B, num_classes) logits: the new head alone (the cached-features path)."""
        return self.head(self.neck(features))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features): everything before the final Linear."""
        return self.neck(self.extract(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.classify(self.extract(x))

    def blocks(self) -> list[list[nn.Module]]:
        """This model's blocks up to its head: the backbone's, then the hidden Dense layers (when a backbone)."""
        return backbone_blocks(self.backbone) + ([[self.neck]] if len(self.neck) else [])

    def freeze(self, trainable_blocks: int = 0, batchnorm: BatchNormMode = "frozen") -> None:
        """Freeze the backbone except its last `trainable_blocks` blocks; the new head always trains.

        Frozen parameters get `requires_grad=False` and frozen modules stay in inference mode (Dropout off,
        BatchNorm on its running statistics). With `batchnorm='frozen'` every BatchNorm of the backbone stays in
        inference mode too, trainable or not: its scale and shift still learn, its statistics do not move (Keras'
        advice for fine-tuning: small batches of new data would otherwise overwrite the pretrained statistics).

        Raises:
            ValueError: if `trainable_blocks` is negative or more than the backbone has.
        """
        blocks = backbone_blocks(self.backbone)
        if not 0 <= trainable_blocks <= len(blocks):
            raise ValueError(
                f"--finetune {trainable_blocks}: the backbone has {len(blocks)} blocks; use 0 (frozen) to {len(blocks)}"
            )
        if batchnorm not in ("frozen", "train"):
            raise ValueError(f"transfer.batchnorm must be 'frozen' or 'train', got '{batchnorm}'")
        self.backbone.requires_grad_(False)
        split = len(blocks) - trainable_blocks
        for block in blocks[split:]:
            for module in block:
                module.requires_grad_(True)
        if trainable_blocks == 0:
            self._eval_modules = [self.backbone]
        else:
            self._eval_modules = [module for block in blocks[:split] for module in block]
            if batchnorm == "frozen":
                norms = [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
                self._eval_modules += norms
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferNet:
        """Set training mode, keeping the frozen parts in inference mode."""
        super().train(mode)
        for module in self._eval_modules:
            module.eval()
        return self


def backbone_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """A model's layers up to its classifier, in blocks from input to output (the unit of `--finetune`).

    A model's own `blocks()` wins. Otherwise a `features` Sequential is cut after each max-pooling (with the
    Dropout and BatchNorm that follow it, as in the seed's CNNs), and a non-empty `neck` is one more block.

    Raises:
        ValueError: for a model that cannot be cut into blocks.
    """
    if callable(getattr(model, "blocks", None)):
        return model.blocks()
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError(f"--finetune: cannot split {type(model).__name__} into blocks (no `blocks()` or `features`)")
    blocks: list[list[nn.Module]] = [[]]
    for module in features:
        pooled = any(isinstance(m, nn.MaxPool2d) for m in blocks[-1])
        if pooled and isinstance(module, nn.Conv2d):
            blocks.append([])
        blocks[-1].append(module)
    neck = getattr(model, "neck", None)
    if isinstance(neck, nn.Module) and any(True for _ in neck.parameters()):
        blocks.append([neck])
    return [block for block in blocks if block]


@register_model
def transfer_net(
    num_classes: int = 10,
    image_size: int = 32,
    backbone: str = "vgg16",
    backbone_kwargs: dict[str, Any] | None = None,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    input_size: int | None = None,
) -> TransferNet:
    """A registered model's layers up to its classifier (`backbone`, built with `backbone_kwargs`) and a new head.

    `image_size` is the side of the images it is given; `input_size` the side the backbone sees (None = the same).
    """
    side = input_size or image_size
    net = TransferNet(create_model(backbone, **(backbone_kwargs or {})), num_classes, hidden, dropout, input_size)
    minimum = getattr(net.backbone, "min_input_size", None)
    if minimum is not None and side < minimum:
        raise ValueError(f"backbone {backbone} needs images of at least {minimum} pixels, got {side}; use --input-size")
    return net
