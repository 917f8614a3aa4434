"""Resumable runs: after every epoch the whole training state goes to `resume.pt` in the run directory.

The file holds the epoch, the history, the weights, the optimiser, scheduler and weight-average states, what the
recipe's callbacks have seen, the loader's shuffle and augmentation state and the random generators, so a resumed
run continues with the same batches and ends with the same weights as one never stopped (on the same machine and
device). It is written atomically and deleted once the run has saved its final model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cifarlab._io import write_with

RESUME_NAME = "resume.pt"
RESUME_FORMAT = "cifarlab-resume"
RESUME_VERSION = 1


def save_resume_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (tensors, numbers, strings, lists and dicts only) to `path` atomically."""
    payload = {"format": RESUME_FORMAT, "version": RESUME_VERSION, **state}
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
        raise ValueError(f"{path} is not a readable resume file ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path} is not a cifarlab resume file")
    if state.get("version") != RESUME_VERSION:
        raise ValueError(f"{path} has resume format version {state.get('version')}; this cifarlab reads "
                         f"{RESUME_VERSION}")  # fmt: skip
    return state
