import math

import pytest
import torch

from cifarlab.models.fast_dropout import (
    _KERNEL,
    CompiledKernel,
    Dropout,
    _apply_flat,
    draw_seeds,
    fast_dropout,
    keep_mask,
)
from cifarlab.models.keras_cnn import KerasCNN, set_fusion

N = 1 << 18  # elements per mask: a binomial standard deviation of about 0.001


def _kept(p: float, shape=(N,)) -> torch.Tensor:
    """One training-mode mask of fast_dropout, as floats (1 kept, 0 dropped)."""
    return (fast_dropout(torch.ones(shape), p) != 0).float().flatten()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_keep_rate_is_binomial_and_survivors_are_scaled(p):
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(N), p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / N)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))


def test_masks_are_uncorrelated_between_neighbours_and_steps():
    torch.manual_seed(0)
    first, second = _kept(0.5), _kept(0.5)
    bound = 5 / math.sqrt(N)
    assert abs(_corr(first[:-1], first[1:])) < bound  # neighbours in memory
    assert abs(_corr(first[:-64], first[64:])) < bound  # the same channel of the next pixel (64 channels)
    assert abs(_corr(first, second)) < bound  # successive steps, same positions
    assert abs(((1 - first) * (1 - second)).mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)


def test_masks_reproduce_per_seed():
    torch.manual_seed(3)
    a = _kept(0.3, (64, 1024))
    torch.manual_seed(3)
    b = _kept(0.3, (64, 1024))
    torch.manual_seed(4)
    c = _kept(0.3, (64, 1024))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_and_eager_masks_agree(dtype):
    x = torch.randn(5000, dtype=dtype)
    seeds = draw_seeds(x.device)
    compiled = _KERNEL(x, seeds, 0.3)
    assert torch.equal(compiled, _apply_flat(x, seeds, 0.3))
    assert keep_mask(torch.arange(5000, dtype=torch.int32), seeds, 0.3).float().mean().item() == pytest.approx(
        0.7, abs=0.03
    )


def test_backward_applies_the_forward_mask_in_any_gradient_layout():
    torch.manual_seed(0)
    x = (torch.rand(4, 8, 6, 6) + 0.5).contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.randn(4, 8, 6, 6)  # row-major: the incoming gradient has another layout than x
    y = fast_dropout(x, 0.3)
    (y * weights).sum().backward()
    expected = torch.where(y != 0, weights / 0.7, 0)
    assert torch.allclose(x.grad, expected)
    assert torch.equal(y != 0, x.grad != 0)


def test_inference_and_edge_probabilities():
    x = torch.randn(100)
    layer = Dropout(0.3).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        fast_dropout(x, 1.5)
    assert repr(layer) == "Dropout(p=0.3, inplace=False)" and isinstance(layer, torch.nn.Dropout)


def test_a_kernel_that_cannot_compile_runs_its_eager_ops(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    kernel = CompiledKernel(_apply_flat, dynamic=False)
    x, seeds = torch.randn(300), torch.tensor([1, 2], dtype=torch.int32)
    with pytest.warns(UserWarning, match="runs uncompiled"):
        out = kernel(x, seeds, 0.5)
    assert torch.equal(out, _apply_flat(x, seeds, 0.5)) and not kernel.usable


def _step(model: torch.nn.Module, x: torch.Tensor, fuse: bool):
    """One training forward/backward from fixed generator state: output, gradients and BatchNorm buffers."""
    set_fusion(model, fuse)
    model.zero_grad()
    x = x.clone().requires_grad_()
    torch.manual_seed(1)
    y = model(x)
    (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    return y.detach(), x.grad, grads, state


@pytest.mark.parametrize("dropout,batchnorm", [(0.3, True), (0.0, False)])
def test_the_fused_chain_matches_the_modules_bit_for_bit(dropout, batchnorm):
    torch.manual_seed(0)
    fused = KerasCNN(((8, 1),), (16,), dropout=dropout, batchnorm=batchnorm, image_size=8)  # one block: one compile
    fused = fused.to(memory_format=torch.channels_last).train()
    plain = KerasCNN(((8, 1),), (16,), dropout=dropout, batchnorm=batchnorm, image_size=8)
    plain = plain.to(memory_format=torch.channels_last).train()
    # integer images and kernels make ties inside pooling windows common: the gradient must go to the first maximum
    with torch.no_grad():
        fused.features[0].weight.copy_(torch.randint(-1, 2, fused.features[0].weight.shape))
    plain.load_state_dict(fused.state_dict())
    x = torch.randint(-2, 3, (6, 3, 8, 8)).float().contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # the second step also checks the updated running statistics
        y_fused, gx_fused, g_fused, s_fused = _step(fused, x, fuse=True)
        y_plain, gx_plain, g_plain, s_plain = _step(plain, x, fuse=False)
        assert torch.equal(y_fused, y_plain)
        assert torch.equal(gx_fused, gx_plain)
        assert all(torch.equal(g_fused[k], g_plain[k]) for k in g_plain)
        assert all(torch.equal(s_fused[k], s_plain[k]) for k in s_plain)
