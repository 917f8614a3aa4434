"""Device, precision and speed settings: where the tensors live and how the math is done."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else the CPU; 'cuda' without CUDA is an error.

    Raises:
        ValueError: if CUDA is asked for and not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but this PyTorch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16), so oneDNN runs bf16 fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return True
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA with bf16 and on CPUs with AMX/AVX512-BF16, else 'fp32'."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision`: bf16 mixed precision (fp32 weights) or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flush_denormals(device: torch.device) -> None:
    """On a CPU, treat subnormal floats as zero, as TensorFlow does.

    Late in a long run Adam's moments of weights that hardly move drift below 1.2e-38; x86 handles such subnormal
    numbers in microcode, tens of times slower, and epochs slow down by a third. Flushing them changes values
    below 1.2e-38 only.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (model initialisation, dropout)."""
    torch.manual_seed(seed)
