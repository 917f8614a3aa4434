"""Pretrained ImageNet weights: downloaded once into the cache (hash-checked, atomic) or read from a local file.

Only VGG16 is published here: torchvision's `vgg16-397923af.pth`, whose name carries the first 8 hex digits of
its sha256 (torch hub's convention), checked before the file is trusted. Weight files are read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers: nothing is unpickled.

Preprocessing follows the weights. torchvision's VGG16 was trained on RGB in [0, 1] normalised with the ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Keras' VGG16 (the seed's) comes from the original Caffe
model and expects `preprocess_input`'s "caffe" mode instead: BGR channel order, 0-255 values minus the mean pixel
(103.939, 116.779, 123.68), no scaling. Feeding either network the other's preprocessing (or plain x/255) shifts
every activation and degrades the features.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from cifarlab._download import cache_home, download
from cifarlab._io.errors import error_gist
from cifarlab.data.loader import Normalization
from cifarlab.models.vgg import IMAGENET_MEAN, IMAGENET_STD, vgg16

PRETRAINED_URLS = {"vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth"}
IMAGENET_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD)
TOP_PREFIX = "classifier."  # the ImageNet top (fc6, fc7, fc8) of the published file, dropped: include_top=False
_HASH_IN_NAME = re.compile(r"-([0-9a-fA-F]{8,})\.[A-Za-z0-9.]+$")


def hash_prefix(url_or_name: str) -> str:
    """The sha256 prefix in a torch-hub file name, e.g. '397923af' in '.../vgg16-397923af.pth'.

    Raises:
        ValueError: if the name carries no hash.
    """
    name = url_or_name.rsplit("/", 1)[-1]
    match = _HASH_IN_NAME.search(name)
    if match is None:
        raise ValueError(f"{name}: no sha256 prefix in the file name (expected name-<8+ hex digits>.pth)")
    return match.group(1).lower()


def pretrained_weights(model: str, weights: str | Path | None = None, *, progress: bool = True) -> Path:
    """The ImageNet weights file of `model`: `weights` when given, else downloaded once into the cache.

    The download goes to `$CIFARLAB_HOME/weights/<file name>` with a progress bar, resumes if interrupted, and
    only a file whose sha256 starts with the hash in its name is moved into place (atomically).

    Args:
        model: a model with published weights (`PRETRAINED_URLS`).
        weights: a local copy (offline use); nothing is downloaded or hash-checked.
        progress: show the download's progress bar.

    Raises:
        KeyError: if `model` has no published weights.
        FileNotFoundError: if `weights` does not exist.
        ValueError: if the downloaded file fails its hash check (nothing is cached).
        OSError: if the download fails (offline: pass `weights`).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file")
        return path
    if model not in PRETRAINED_URLS:
        raise KeyError(
            f"--backbone imagenet: no published ImageNet weights for model '{model}' "
            f"(available: {', '.join(PRETRAINED_URLS)}); give a cifarlab run directory instead"
        )
    url = PRETRAINED_URLS[model]
    name = url.rsplit("/", 1)[-1]
    try:
        return download(url, cache_home() / "weights" / name, sha256_prefix=hash_prefix(name), progress=progress)
    except OSError as error:
        raise OSError(f"{error}; offline, fetch {url} elsewhere and pass it with --weights PATH") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a PyTorch .pth/.pt (read with weights_only=True) or a .safetensors file.

    Raises:
        ValueError: if the file is unreadable or holds anything but a flat dict of tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = _torch_load(path)
    except Exception as error:  # a foreign or corrupt file fails in many ways (zip, pickle, safetensors, OS)
        raise ValueError(f"{path} is not a readable weights file ({error_gist(error)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps its state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (name -> tensor)")
    return state


def _torch_load(path: Path) -> object:
    """torch.load with weights_only; memory-mapped where the format allows, so an unused top is never read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def vgg16_base_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The 26 tensors of VGG16's 13 convolutions from a file in torchvision's layout (its top is ignored).

    Raises:
        ValueError: naming the missing and unexpected keys, or the tensors whose shapes differ.
    """
    state = read_state_dict(path)
    expected = {f"features.{key}": value for key, value in _vgg16_base_template().items()}
    given = {key: value for key, value in state.items() if not key.startswith(TOP_PREFIX)}
    missing = [key for key in expected if key not in given]  # in the published file's order
    unexpected = [key for key in given if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a VGG16 checkpoint in torchvision's layout (features.N.weight/bias): "
            f"missing keys {_short(missing)}, unexpected keys {_short(unexpected)}"
        )
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if given[k].shape != v.shape]  # fmt: skip
    if wrong:
        raise ValueError(f"{path} is not VGG16's base: shapes differ for {'; '.join(wrong[:4])}")
    return {key: given[key].float() for key in expected}


def _vgg16_base_template() -> dict[str, torch.Tensor]:
    """Names and shapes (meta tensors, no memory) of VGG16's convolutions, relative to `features`."""
    with torch.device("meta"):
        return dict(vgg16().features.state_dict())


def _short(keys: list[str], limit: int = 8) -> str:
    """At most `limit` keys, then a count of the rest."""
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
    return f"[{shown}]"
