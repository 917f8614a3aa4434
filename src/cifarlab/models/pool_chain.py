"""The memory-bound chain after a Keras block's last conv, fused: 2x2 max-pool, ReLU, Dropout, BatchNorm.

In eager PyTorch the chain is six passes over memory forward (max-pool with int64 indices, ReLU, the dropout
mask, its product, BatchNorm's statistics and normalisation) and more backward, including zero-filling the
max-pool's input gradient before scattering into it. Here, in training:

- forward, one compiled pass reads the conv output once and writes the pooled, rectified, dropped-out map and a
  2-byte code of each window's argmax (`_pool_relu_dropout`); BatchNorm follows as PyTorch's own kernel;
- backward, after BatchNorm's own backward, one compiled pass gates the gradient by ReLU and the dropout mask
  (both are `output > 0`) and writes it straight to the argmax position of each window, zeros elsewhere
  (`_unpool_gate`): no fill, no scatter, and the conv output is not kept for backward.

The values are the unfused chain's exactly (same argmax ties, same dropout masks drawn from the same seeds): a
regional `torch.compile` of the whole chain was also tried and was 2-3x slower than eager, its max-pool backward
being slow on channels_last. The modules keep their parameters and buffers, so checkpoints are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.models.fast_dropout import CompiledKernel, Dropout, draw_seeds, keep_mask


def _pool_relu_dropout(x: torch.Tensor, seeds: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) channels_last -> dropout(relu(maxpool2x2(x))) channels_last, and each window's argmax (0-3).

    The argmax code is stored in x's dtype: int8 or bool outputs compile to slow scalar stores on CPU.
    """
    n, c, h, w = x.shape
    windows = x.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c)
    best = windows[:, :, 0, :, 0]
    code = torch.zeros_like(best)
    for k, value in ((1, windows[:, :, 0, :, 1]), (2, windows[:, :, 1, :, 0]), (3, windows[:, :, 1, :, 1])):
        take = (value > best) | torch.isnan(value)  # PyTorch's rule: the first maximum wins, NaN propagates
        best = torch.where(take, value, best)
        code = torch.where(take, float(k), code)
    out = torch.relu(best)  # (n, h/2, w/2, c)
    if p > 0:
        index = torch.arange(out.numel(), dtype=torch.int32, device=x.device).view(out.shape)
        out = torch.where(keep_mask(index, seeds, p), out * (1.0 / (1.0 - p)), 0)
    return out.permute(0, 3, 1, 2), code


def _unpool_gate(grad: torch.Tensor, out: torch.Tensor, code: torch.Tensor, scale: float) -> torch.Tensor:
    """The chain's input gradient: grad * scale where out > 0, placed at each window's argmax (channels_last)."""
    n, c, ho, wo = grad.shape
    gated = torch.where(out > 0, grad * scale, 0).permute(0, 2, 3, 1)  # (n, ho, wo, c)
    position = torch.arange(4, dtype=code.dtype, device=grad.device).view(1, 1, 2, 1, 2, 1)
    full = torch.where(code[:, :, None, :, None, :] == position, gated[:, :, None, :, None, :], 0)
    return full.reshape(n, 2 * ho, 2 * wo, c).permute(0, 3, 1, 2)


# one compile per block geometry (channels, height, width, dtype, p); the batch size is marked dynamic
_FORWARD = CompiledKernel(_pool_relu_dropout, dynamic=False)
_BACKWARD = CompiledKernel(_unpool_gate, dynamic=False)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous(memory_format=torch.channels_last)
    torch._dynamo.maybe_mark_dynamic(t, 0)
    return t


class _PoolChainFunction(torch.autograd.Function):
    """Forward and backward of max-pool -> ReLU -> Dropout(p) -> BatchNorm (norm optional: `norm=None`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, norm: nn.BatchNorm2d | None, p: float):  # noqa: D102
        seeds = draw_seeds(x.device) if p > 0 else torch.zeros(2, dtype=torch.int32, device=x.device)
        out, code = _FORWARD(_channels_last(x), seeds, p)
        ctx.p, ctx.norm = p, norm
        if norm is None:
            ctx.save_for_backward(out, code)
            return out
        momentum = _momentum(norm)
        y, mean, invstd = torch.ops.aten.native_batch_norm(
            out, weight, bias, norm.running_mean, norm.running_var, True, momentum, norm.eps
        )
        ctx.save_for_backward(out, code, weight, mean, invstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        grad_weight = grad_bias = None
        if ctx.norm is None:
            out, code = ctx.saved_tensors
        else:
            out, code, weight, mean, invstd = ctx.saved_tensors
            norm = ctx.norm
            mask = [True, weight is not None and ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            grad, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
                grad, out, weight, norm.running_mean, norm.running_var, mean, invstd, True, norm.eps, mask
            )
        grad_x = _BACKWARD(_channels_last(grad), out, code, 1.0 / (1.0 - ctx.p))
        return grad_x, grad_weight, grad_bias, None, None


def _momentum(norm: nn.BatchNorm2d) -> float:
    """nn.BatchNorm2d's momentum rule, counting the batch as its forward does."""
    if not norm.track_running_stats:
        return 0.0
    norm.num_batches_tracked.add_(1)
    return 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum


def can_fuse(x: torch.Tensor, pool: nn.MaxPool2d) -> bool:
    """True when the fused chain computes what the modules would: a 2x2/2 max-pool of an even-sided channels_last map.

    The kernels must also have compiled (or not yet been tried).
    """
    return (
        _FORWARD.usable
        and x.dim() == 4
        and x.is_floating_point()
        and x.shape[-1] % 2 == 0
        and x.shape[-2] % 2 == 0
        and x.is_contiguous(memory_format=torch.channels_last)
        and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not pool.ceil_mode
        and not pool.return_indices
    )


def pool_chain(
    x: torch.Tensor, pool: nn.MaxPool2d, dropout: nn.Dropout | None = None, norm: nn.BatchNorm2d | None = None
) -> torch.Tensor:
    """max-pool -> ReLU -> Dropout -> BatchNorm of the given modules, fused where `can_fuse` allows.

    Args:
        x: the block's last conv output, (N, C, H, W).
        pool: the 2x2 max-pool.
        dropout: the Dropout layer (None: none).
        norm: the BatchNorm2d layer (None: none).

    Returns:
        the chain's output, the same values as running the modules in turn (and the same running statistics).
    """
    p = dropout.p if dropout is not None and dropout.training else 0.0
    fast_dropout = dropout is None or (isinstance(dropout, Dropout) and dropout.fast)
    if not (pool.training and fast_dropout and can_fuse(x, pool)) or (norm is not None and not norm.training):
        for layer in (pool, nn.functional.relu, dropout, norm):
            if layer is not None:
                x = layer(x)
        return x
    if norm is None:
        return _PoolChainFunction.apply(x, None, None, None, p)
    return _PoolChainFunction.apply(x, norm.weight, norm.bias, norm, p)
