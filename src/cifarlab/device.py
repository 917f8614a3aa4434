"""Device, precision and speed settings: where the tensors live and how the math is done."""

from __future__ import annotations

import contextlib
import ctypes
import platform
import re
from collections.abc import Callable
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


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16), so oneDNN runs bf16 fast."""
    flags = _cpuinfo()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def describe_hardware(device: torch.device) -> str:
    """What a run's speed depends on, in words: 'NVIDIA H200' or 'AMD EPYC 9B14, 2 threads, AVX512-BF16'.

    A CPU whose model name is masked to a bare 'AMD EPYC' is named by its family and model numbers as well.

    Times from different machines are not comparable; run records and reports carry this beside every figure.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = _cpuinfo()
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    model = " ".join(name.group(1).split()) if name else platform.processor() or platform.machine() or "unknown CPU"
    if not re.search(r"\d", model):  # a masked name ('AMD EPYC') hides machines of different speeds: add the model
        family, number = (re.search(rf"^{key}\s*:\s*(\d+)$", info, re.MULTILINE) for key in ("cpu family", "model"))
        if family and number:
            model += f" (family {family.group(1)}, model {number.group(1)})"
    bf16 = "AMX-BF16" if "amx_bf16" in info else "AVX512-BF16" if "avx512_bf16" in info else "no bf16 hardware"
    return f"{model}, {torch.get_num_threads()} threads, {bf16}"


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
    """On a CPU, treat subnormal floats as zero in every thread, as TensorFlow does.

    Late in a long run Adam's moments of weights that hardly move drift below 1.2e-38; x86 handles such subnormal
    numbers in microcode, tens of times slower, and epochs slow down by a third. Flushing them changes values
    below 1.2e-38 only. The flag lives in each thread's MXCSR register: `torch.set_flush_denormal` sets it in the
    calling thread, which threads created later inherit, so the OpenMP workers that already exist are set too.
    """
    if device.type == "cpu":
        set_flush_denormal_all_threads(True)


def set_flush_denormal_all_threads(flush: bool) -> bool:
    """`torch.set_flush_denormal(flush)` in this thread and in every thread of PyTorch's OpenMP pool.

    Returns False where the pool is not GNU OpenMP (libgomp, which PyTorch's Linux wheels use): there only the
    calling thread and the threads it creates later are set.
    """
    torch.set_flush_denormal(flush)
    return _in_every_openmp_thread(lambda: torch.set_flush_denormal(flush))


def _in_every_openmp_thread(fn: Callable[[], object]) -> bool:
    """Run `fn` once in each thread of PyTorch's OpenMP pool (libgomp); False where the runtime is another one."""
    try:
        maps = Path("/proc/self/maps").read_text()
        library = next(line.split()[-1] for line in maps.splitlines() if "libgomp" in line)
        parallel = ctypes.CDLL(library).GOMP_parallel
    except (OSError, StopIteration, AttributeError):
        return False
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    callback = callback_type(lambda _data: fn())
    parallel.argtypes = [callback_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel(callback, None, torch.get_num_threads(), 0)  # a parallel region of the pool's size, flags 0
    return True


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (model initialisation, dropout)."""
    torch.manual_seed(seed)
