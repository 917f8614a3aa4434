"""Resumable runs: after every epoch the whole training state goes to `resume.pt` in the run directory.

The file holds the epoch, the history, the weights, the optimiser, scheduler and weight-average states, what the
recipe's callbacks have seen, the loader's shuffle and augmentation state and the random generators, so a resumed
run continues with the same batches and ends with the same weights as one never stopped (on the same machine and
device). It is written atomically and deleted once the run has saved its final model. It carries the sha256 of
its whole content (every tensor and every number), so a damaged file is refused with one line rather than
resumed from; files written before the checksum existed load as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from cifarlab._io.atomic import write_with
from cifarlab._io.digest import digest_arrays
from cifarlab._io.errors import error_gist

RESUME_NAME = "resume.pt"
RESUME_FORMAT = "cifarlab-resume"
RESUME_VERSION = 1


def save_resume_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (tensors, numbers, strings, lists and dicts only) to `path` atomically."""
    payload = {"format": RESUME_FORMAT, "version": RESUME_VERSION, "sha256": state_digest(state), **state}
    write_with(path, lambda tmp: torch.save(payload, tmp))


def load_resume_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by `save_resume_state`, onto the CPU; no code is unpickled (`weights_only`).

    Raises:
        FileNotFoundError: if there is no file.
        ValueError: if it is unreadable or not a cifarlab resume file of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file fails in many ways
        raise ValueError(f"{path} is not a readable resume file, damaged or cut short ({error_gist(error)})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path} is not a cifarlab resume file")
    if state.get("version") != RESUME_VERSION:
        raise ValueError(f"{path} has resume format version {state.get('version')}; this cifarlab reads "
                         f"{RESUME_VERSION}")  # fmt: skip
    if "sha256" in state:  # absent only in files written before resume files had checksums
        content = {key: value for key, value in state.items() if key not in ("format", "version", "sha256")}
        if state_digest(content) != state["sha256"]:
            raise ValueError(f"{path} is damaged: its content does not match its checksum (bits changed on disk); "
                             "delete it to restart the run, or restore it from a copy")  # fmt: skip
    return state


def state_digest(state: Any) -> str:
    """sha256 of a training state: its structure and plain values (repr), then every tensor's bytes."""
    tensors: dict[str, torch.Tensor] = {}

    def skeleton(value: Any, name: str) -> Any:  # the state with each tensor replaced by its name
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            return f"<tensor {name}>"
        if isinstance(value, dict):
            return type(value).__name__, [(key, skeleton(item, f"{name}/{key!r}")) for key, item in value.items()]
        if isinstance(value, list | tuple):
            return type(value).__name__, [skeleton(item, f"{name}/{i}") for i, item in enumerate(value)]
        return value

    structure = repr(skeleton(state, ""))
    return hashlib.sha256(f"{structure}\0{digest_arrays(tensors)}".encode()).hexdigest()
