"""Dropout with Keras' semantics and cheap masks: a counter-based hash instead of one serial draw per element.

PyTorch's CPU dropout draws one random number per element from a serial Mersenne twister (about 12 ns each), so
on the seed's CNNs it took a fifth of a training step. Here each step draws two 31-bit seeds from torch's global
generator, and element `i` (its position in memory) is kept when 16 bits of a hash of (i, seeds) reach the
threshold: vectorised integer ops, in one pass that also scales the survivors, compiled once by torch.compile.
Nothing is saved for backward but the two seeds: the backward pass recomputes the same mask.

Semantics are Keras' (and PyTorch's): in training each element is zeroed with probability p (to 1/65536) and the
survivors are scaled by 1/(1-p); in inference the layer is the identity. The seeds come from the global generator,
so `torch.manual_seed` reproduces the masks and a resumed run (which restores that generator) continues
bit-identically. Compiled and eager evaluation give the same masks. Where torch.compile cannot build the kernel
(no C++ compiler), one warning is given and PyTorch's own dropout takes over (its masks, its speed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

THRESHOLD_BITS = 16  # the mask compares 16 hash bits with round(p * 2**16)
MAX_NUMEL = 2**31 - 1  # element indices are int32
RECOMPILE_LIMIT = 64  # compiled variants per kernel (shapes, dtypes, p); beyond it torch runs the eager ops


def _int32(value: int) -> int:
    """An unsigned 32-bit constant as the int32 with the same bits."""
    return value - 2**32 if value >= 2**31 else value


_GOLDEN = _int32(0x9E3779B1)
_FMIX_1, _FMIX_2 = _int32(0x85EBCA6B), _int32(0xC2B2AE35)


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int32 (wrapping multiplies; masks make the right shifts logical)."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _FMIX_1
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _FMIX_2
    return h ^ ((h >> 16) & 0xFFFF)


def keep_mask(index: torch.Tensor, seeds: torch.Tensor, p: float) -> torch.Tensor:
    """True where element `index` survives dropout with probability `p` under `seeds` (2 int32 values).

    Two keyed rounds of the MurmurHash3 finaliser, so that masks of different seeds are not shifted copies of one
    another; the top 16 bits are compared with round(p * 65536).
    """
    h = _fmix32(index * _GOLDEN ^ seeds[0])
    h = _fmix32(h ^ seeds[1])
    return ((h >> 16) & 0xFFFF) >= round(p * 2**THRESHOLD_BITS)


def _apply_flat(flat: torch.Tensor, seeds: torch.Tensor, p: float) -> torch.Tensor:
    """One pass over a 1-D tensor: zero the dropped elements and scale the survivors by 1/(1-p)."""
    index = torch.arange(flat.numel(), dtype=torch.int32, device=flat.device)
    return torch.where(keep_mask(index, seeds, p), flat * (1.0 / (1.0 - p)), 0)


class CompiledKernel:
    """A pure tensor function compiled on first use, that runs its eager ops where torch.compile fails.

    Args:
        fn: the function; its eager result is the reference the compiled one must match.
        dynamic: torch.compile's `dynamic` (False: one compile per shape, except dims marked dynamic by the caller).
    """

    def __init__(self, fn: Callable[..., object], dynamic: bool) -> None:
        self.fn, self.dynamic = fn, dynamic
        self.compiled: Callable[..., object] | None = None
        self.usable = True  # False once compiling failed: callers may take a faster eager route instead

    def __call__(self, *args: object) -> Any:  # noqa: D102
        if not self.usable or torch.compiler.is_compiling():  # inside a compiled model: let it trace the ops
            return self.fn(*args)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.fn, dynamic=self.dynamic)
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):  # one compile per block geometry
                return self.compiled(*args)
        except Exception as error:  # no C++ compiler, no triton, ...: same values, eager speed
            self.usable = False
            warnings.warn(f"{self.fn.__name__} runs uncompiled ({type(error).__name__}: {error})", stacklevel=3)
            return self.fn(*args)


# any length, one compile per dtype and p (dynamic=True would make p a symbol, and it was mishandled: torch 2.13)
_KERNEL = CompiledKernel(_apply_flat, dynamic=False)


def _memory_order(x: torch.Tensor) -> bool:
    """True when x's elements lie in memory as channels_last (N, H, W, C), False for row-major."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _flatten(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The elements of x in memory order (a view when x is laid out that way, else a copy)."""
    return x.permute(0, 2, 3, 1).reshape(-1) if channels_last else x.reshape(-1)


def _unflatten(flat: torch.Tensor, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        n, c, h, w = like.shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(like.shape)


def _masked(x: torch.Tensor, seeds: torch.Tensor, p: float, channels_last: bool) -> torch.Tensor:
    flat = _flatten(x, channels_last)
    torch._dynamo.maybe_mark_dynamic(flat, 0)
    return _unflatten(_KERNEL(flat, seeds, p), x, channels_last)


class _DropoutFunction(torch.autograd.Function):
    """y = mask * x / (1-p); backward recomputes the mask from the seeds (nothing per element is saved)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, seeds: torch.Tensor, p: float) -> torch.Tensor:  # noqa: D102
        channels_last = _memory_order(x)
        ctx.save_for_backward(seeds)
        ctx.p, ctx.channels_last = p, channels_last
        return _masked(x, seeds, p, channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        (seeds,) = ctx.saved_tensors
        return _masked(grad, seeds, ctx.p, ctx.channels_last), None, None


def draw_seeds(device: torch.device) -> torch.Tensor:
    """Two 31-bit seeds (int32) from torch's global generator for `device`: one dropout mask's worth."""
    return torch.randint(0, 2**31 - 1, (2,), dtype=torch.int32, device=device)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Keras/PyTorch dropout with hashed masks; `F.dropout`'s signature and semantics.

    Args:
        x: any tensor (channels_last or row-major layouts are used as they lie in memory).
        p: drop probability in [0, 1].
        training: False returns x unchanged.

    Returns:
        x with each element zeroed with probability p and the rest scaled by 1/(1-p).

    Raises:
        ValueError: if p is outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0 or x.numel() > MAX_NUMEL or not x.is_floating_point() or not _KERNEL.usable:
        return F.dropout(x, p, training)
    return _DropoutFunction.apply(x, draw_seeds(x.device), p)


class Dropout(nn.Dropout):
    """`nn.Dropout` with hashed masks (see the module docstring); `fast=False` runs PyTorch's own.

    A drop-in subclass: same argument, same state (none), same repr, so checkpoints and `isinstance` checks
    are unaffected.
    """

    fast: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.fast:
            return F.dropout(x, self.p, self.training, self.inplace)
        return fast_dropout(x, self.p, self.training)


def set_fast_dropout(model: nn.Module, fast: bool) -> int:
    """Switch every fast `Dropout` in `model` to hashed masks (True) or PyTorch's dropout (False).

    Returns:
        how many Dropout layers were switched.
    """
    layers = [m for m in model.modules() if isinstance(m, Dropout)]
    for layer in layers:
        layer.fast = fast
    return len(layers)
