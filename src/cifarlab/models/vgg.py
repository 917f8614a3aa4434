"""VGG16 (Simonyan & Zisserman, 2015), with the parameter names of the published PyTorch ImageNet checkpoint.

`VGG.features` is laid out exactly as torchvision's: a flat `nn.Sequential` of Conv2d, ReLU and MaxPool2d, so
`features.0.weight` ... `features.28.bias` are the 26 tensors of the 13 convolutions in
`https://download.pytorch.org/models/vgg16-397923af.pth` and that file loads as is (see
`cifarlab.transfer.weights`). The base has 14,714,688 parameters, as Keras' `VGG16(include_top=False)`.

The ImageNet top (`classifier.*`: 7x7x512 -> 4096 -> 4096 -> 1000) is not built. In its place a global average
pooling makes a 512-vector of any input of at least 32 pixels; at 32x32 the last pooling leaves a 1x1x512 map, so
this is exactly the Flatten the seed's PROYECTO 10 puts after Keras' VGG16. A Linear head maps it to the classes.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.models.registry import register_model

VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
VGG16_BASE_PARAMS = 14_714_688  # Keras' VGG16(include_top=False).count_params()
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's ImageNet weights expect, RGB in [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG(nn.Module):
    """A VGG network: 3x3 convolutions with ReLU, 2x2 max-pooling, global average pooling and a Linear head.

    Args:
        layers: output channels of each convolution, "M" for a max-pooling (torchvision's configuration list).
        num_classes: outputs of the head.
        image_size: input side; at least 32 for VGG16's five poolings.
    """

    def __init__(
        self, layers: tuple[int | str, ...] = VGG16_LAYERS, num_classes: int = 10, image_size: int = 32
    ) -> None:
        super().__init__()
        pools = sum(1 for v in layers if v == "M")
        self.min_input_size = 2**pools  # a smaller input has no pixel left after the last pooling
        if image_size < self.min_input_size:
            raise ValueError(
                f"VGG needs images of at least {2**pools} pixels ({pools} poolings), got {image_size}; "
                "upsample them with --input-size"
            )
        modules: list[nn.Module] = []
        channels = 3
        for v in layers:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)  # no parameters: the checkpoint's names are untouched
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The VGG initialisation of torchvision: He-normal (fan_out) convolutions, N(0, 0.01) Linear, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def blocks(self) -> list[list[nn.Module]]:
        """The convolution blocks, input to output, each ending with its max-pooling (5 for VGG16)."""
        blocks: list[list[nn.Module]] = [[]]
        for module in self.features:
            blocks[-1].append(module)
            if isinstance(module, nn.MaxPool2d):
                blocks.append([])
        return [block for block in blocks if block]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 512): the convolutional base, globally average-pooled."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


@register_model
def vgg16(num_classes: int = 10, image_size: int = 32) -> VGG:
    """VGG16: 13 convolutions in 5 blocks (14,714,688 parameters), global average pooling and a Linear head."""
    return VGG(VGG16_LAYERS, num_classes=num_classes, image_size=image_size)
