"""Transfer learning: pretrained backbones (ImageNet VGG16 or any cifarlab run) under a new head.

`weights` fetches and checks published weights, `features` caches a frozen backbone's features, and `trainer`
trains the head (and, when fine-tuning, the backbone's last blocks) with the ordinary Trainer loop.
"""

from cifarlab.transfer.trainer import TransferTrainer, preset_model, resolve_backbone
from cifarlab.transfer.weights import PRETRAINED_URLS, pretrained_weights, read_state_dict, vgg16_base_state

__all__ = [
    "PRETRAINED_URLS",
    "TransferTrainer",
    "preset_model",
    "pretrained_weights",
    "read_state_dict",
    "resolve_backbone",
    "vgg16_base_state",
]
