"""Model checkpoints: safetensors weights plus a JSON file of metadata beside them. Nothing is unpickled.

Since version 2 the safetensors header holds the sha256 of the weights (`_io.digest.digest_arrays`) and of the JSON,
and the JSON repeats the weights' sha256 as `weights_sha256`: damaged or cut-short weights, a damaged or edited
JSON, and a JSON that belongs to other weights (a stale or mixed-up pair) are each refused with one line.
Version-1 checkpoints carry no checksums and load as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cifarlab._io.atomic import write_json, write_with
from cifarlab._io.digest import digest_arrays

CHECKPOINT_NAME = "model.safetensors"
CHECKPOINT_FORMAT = "cifarlab-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the weights' sha256 in the header and the JSON


def meta_path(weights_path: Path) -> Path:
    """The JSON metadata file that goes with a weights file."""
    return weights_path.with_suffix(".json")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write the model's state as safetensors and `meta` as JSON beside it, each atomically.

    The JSON is written last, so a checkpoint whose JSON exists always has its weights complete. Both carry
    the weights' sha256, which `read_checkpoint` checks.
    """
    path = Path(path)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    digest = digest_arrays(state)
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta, "weights_sha256": digest}
    header = {"format": "pt", "sha256": digest, "meta_sha256": _meta_digest(record)}
    write_with(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    write_json(meta_path(path), record)
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
        ValueError: if either file is unreadable or not a cifarlab checkpoint, the weights do not match their
            checksum (damaged, cut short), or the JSON belongs to other weights.
    """
    path = resolve_checkpoint(path)
    try:
        meta = json.loads(meta_path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path(path)} is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path(path)} is not a cifarlab checkpoint (no format '{CHECKPOINT_FORMAT}')")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}): damaged or cut short") from None
    _check_weights(path, state, header, meta)
    return state, meta


def _check_weights(path: Path, state: dict[str, torch.Tensor], header: dict[str, str], meta: dict[str, Any]) -> None:
    """Raise ValueError unless the weights match the checksum in their header and the one in the JSON."""
    version = meta.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"{meta_path(path)} has checkpoint version {version!r}; this cifarlab reads 1 to "
                         f"{CHECKPOINT_VERSION} (a newer cifarlab wrote it?)")  # fmt: skip
    saved, recorded = header.get("sha256"), meta.get("weights_sha256")
    if version < 2 and saved is None and recorded is None:
        return  # written before checkpoints had checksums
    if saved is None or recorded is None:
        where = path if saved is None else meta_path(path)
        raise ValueError(f"{where} has no weights checksum although the checkpoint is version {version}: the "
                         "files were edited or mixed up; retrain, or restore both files from a copy")  # fmt: skip
    if digest_arrays(state) != saved:
        raise ValueError(f"{path} is damaged: its weights do not match the checksum in its header (bits changed "
                         "on disk or the file was cut short); retrain, or restore it from a copy")  # fmt: skip
    if recorded != saved:
        raise ValueError(f"{meta_path(path)} belongs to other weights than {path.name} (a stale or mixed-up pair: "
                         "their checksums differ); restore both files from the same run")  # fmt: skip
    if header.get("meta_sha256") != _meta_digest(meta):
        raise ValueError(f"{meta_path(path)} was damaged or edited: it does not match the checksum in {path.name}'s "
                         "header; restore it from a copy of the run")  # fmt: skip


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of a checkpoint's JSON metadata, as JSON with sorted keys (tuples and lists alike)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


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
