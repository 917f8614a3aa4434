"""Model checkpoints: safetensors weights plus a JSON file of metadata beside them. Nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cifarlab._io import write_json, write_with

CHECKPOINT_NAME = "model.safetensors"
CHECKPOINT_FORMAT = "cifarlab-checkpoint"
CHECKPOINT_VERSION = 1


def meta_path(weights_path: Path) -> Path:
    """The JSON metadata file that goes with a weights file."""
    return weights_path.with_suffix(".json")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write the model's state as safetensors and `meta` as JSON beside it, each atomically.

    The JSON is written last, so a checkpoint whose JSON exists always has its weights complete.
    """
    path = Path(path)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    write_with(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    write_json(meta_path(path), {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta})
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint's weights file.

    Raises:
        FileNotFoundError: if there is no checkpoint there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (give a run directory or a .safetensors file)")
    if not meta_path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} has no metadata file {meta_path(path).name} beside it")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's weights and metadata (no model is built).

    Raises:
        FileNotFoundError: if it is missing.
        ValueError: if either file is unreadable or not a cifarlab checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        meta = json.loads(meta_path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path(path)} is not valid JSON: {error}") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path(path)} is not a cifarlab checkpoint (no format '{CHECKPOINT_FORMAT}')")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from None
    return state, meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` into `model` exactly, or say which keys do not fit.

    Raises:
        ValueError: naming the missing and unexpected keys, or the tensors whose shapes differ.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the model: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if value.shape != state[key].shape
    ]
    if wrong:
        raise ValueError(f"{source} does not fit the model: shapes differ for {'; '.join(wrong[:4])}")
    model.load_state_dict(state)
