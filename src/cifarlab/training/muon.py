"""Muon: momentum whose update is orthogonalised, for the conv filters of BatchNorm networks.

The technique is public (Keller Jordan et al., 2024: "Muon: MomentUm Orthogonalized by Newton-schulz", used by the
CIFAR-10 and NanoGPT speed-runs); this is cifarlab's own implementation. Each filter bank (out, in, kh, kw) is seen
as an (out, in*kh*kw) matrix; its Nesterov momentum is replaced by the nearest semi-orthogonal matrix (all singular
values 1), computed with a few Newton-Schulz iterations, so every direction of the update moves at the same rate.

Groups marked `orthogonal=False` get plain Nesterov SGD instead, so one optimiser (and one lr schedule) covers the
whole network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Coefficients of the quintic iteration x <- a x + b (x x^T) x + c (x x^T)^2 x, chosen to push every singular value
# of a matrix with spectral norm <= 1 towards 1 quickly (they need not converge exactly: ~[0.7, 1.2] is enough).
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(matrix: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """Approximately the semi-orthogonal factor U V^T of a 2-D tensor U S V^T, in bfloat16 arithmetic.

    Args:
        matrix: (rows, cols) tensor.
        steps: Newton-Schulz iterations.

    Returns:
        A tensor of `matrix`'s shape and dtype whose singular values are all close to 1.
    """
    if matrix.ndim != 2:
        raise ValueError(f"orthogonalize expects a 2-D tensor, got shape {tuple(matrix.shape)}")
    a, b, c = _NS_COEFFICIENTS
    x = matrix.bfloat16()
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # Frobenius norm >= spectral norm, so all singular values start <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.T
    return x.to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """Orthogonalised momentum for groups with `orthogonal=True`, Nesterov SGD for the others.

    In orthogonal groups each weight is first rescaled to a fixed norm (sqrt of its output channels), then moved by
    `lr` times the orthogonalised momentum. Keeping the norm fixed is right for filters followed by BatchNorm (their
    scale does not change the output) and makes `lr` the relative size of each step; weight decay is then unneeded
    and ignored in those groups.

    Args:
        params: parameters or parameter groups; a group may set `orthogonal`, `lr`, `momentum`, `weight_decay`.
        lr: learning rate.
        momentum: momentum coefficient.
        nesterov: use the Nesterov form of momentum.
        weight_decay: L2 added to the gradient (SGD groups only).
        orthogonal: default for groups that do not say.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        orthogonal: bool = False,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, orthogonal=orthogonal)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["orthogonal"]:
                for p in group["params"]:
                    if p.ndim < 2:
                        raise ValueError(
                            f"Muon: orthogonal groups need matrices or filters, got shape {tuple(p.shape)}"
                        )

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102
        if closure is not None:
            raise ValueError("Muon does not take a closure")
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["orthogonal"] and group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if group["orthogonal"]:
                    update = orthogonalize(update.reshape(len(update), -1)).view_as(p)
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                p.add_(update, alpha=-lr)
