"""The model registry: one dict, one decorator, one factory."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `fn` as a model entry point under its function name.

    Raises:
        ValueError: if the name is already taken.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model '{name}' is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style `pattern` (e.g. 'proyecto*'), sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def unknown_name_message(kind: str, name: str, known: list[str], command: str) -> str:
    """The error text for an unknown registry name, with the closest matches."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (see 'cifarlab {command}')"


def create_model(name: str, **overrides: object) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from `list_models()`.
        **overrides: keyword arguments for the entry point; those that are None are ignored, so an unset
            CLI flag never hides a preset default.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        KeyError: for an unknown name (the message lists the closest names).
        ValueError: for a keyword argument the model does not take (e.g. an `[arch]` option it has no use for).

    Example:
        >>> model = create_model("proyecto4", num_classes=10)
    """
    if name not in _MODELS:
        raise KeyError(unknown_name_message("model", name, list(_MODELS), "models"))
    kwargs = {key: value for key, value in overrides.items() if value is not None}
    parameters = inspect.signature(_MODELS[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            takes = ", ".join(p for p in parameters if p not in ("num_classes", "image_size")) or "no options"
            raise ValueError(f"model {name!r} does not take {', '.join(unknown)} (its options: {takes})")
    return _MODELS[name](**kwargs)


@torch.no_grad()
def check_accepts_size(model: nn.Module, name: str, size: int, native: int, device: torch.device) -> None:
    """Fail early, and clearly, when progressive resizing asks a fixed-size network for smaller images.

    Raises:
        ValueError: when `model` (registered as `name`, built for `native`-pixel images) cannot take `size`.
    """
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, size, size, device=device))
    except RuntimeError:
        raise ValueError(
            f"train.low_res_size: model {name!r} cannot take {size}x{size} images (it needs {native}x{native}); "
            "progressive resizing needs a size-agnostic network"
        ) from None
    finally:
        model.train(was_training)
