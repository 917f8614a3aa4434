"""Content digests of named arrays, stored inside the files they check (cache files, checkpoints, resume states)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np


def digest_arrays(arrays: Mapping[str, Any]) -> str:
    """sha256 of named arrays (numpy arrays or torch tensors): each name, dtype, shape and byte, in name order.

    The digest covers the content, not the file, so it can be stored inside the file it checks (cache and
    checkpoint metadata) and recomputed from what was read back.
    """
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        hasher.update(name.encode() + b"\0")
        _digest_array(hasher, arrays[name])
    return hasher.hexdigest()


def _digest_array(hasher: Any, value: Any) -> None:
    """Feed one array's dtype, shape and bytes to `hasher`."""
    if hasattr(value, "detach"):  # a torch tensor; torch is imported only then, so numpy-only callers stay light
        import torch

        flat = value.detach().to("cpu").contiguous().reshape(-1)
        hasher.update(f"{flat.dtype}{tuple(value.shape)}".encode())
        hasher.update(memoryview(flat.view(torch.uint8).numpy()))
        return
    array = np.asarray(value)
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
