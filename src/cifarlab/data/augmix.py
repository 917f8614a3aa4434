"""AugMix (Hendrycks et al., ICLR 2020): each image mixed with a few randomly augmented copies of itself.

For every image, `width` chains each apply 1 to 3 operations drawn from the list below at a random strength up to
`severity` (the paper's CIFAR setting: width 3, depth 1-3, severity 3); the chains are mixed with Dirichlet(1)
weights, and the mix with the image itself with a Beta(1, 1) weight. The operations are the paper's, which
leave out everything that overlaps CIFAR-10-C's corruptions (no contrast, colour, brightness, sharpness, noise or
blur), so a robustness measured on CIFAR-10-C is not one trained on it.

The operations follow PIL's ImageOps and Image.transform as the paper's code calls them, batched on torch over
float images in [0, 255]: autocontrast, equalize, posterize, solarize (exact on integer pixels), rotate, shear and
translate (bilinear, black outside, as PIL fills). The paper's Jensen-Shannon consistency loss, which needs three
forward passes per image, is not part of this: this is the augmentation alone (the paper's "AugMix without JSD").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPERATIONS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
              "translate_y")  # fmt: skip
WIDTH = 3  # chains per image
MAX_DEPTH = 3  # operations per chain: 1 to this many, drawn per chain and image
MAX_SEVERITY = 10


def _int_parameter(level: torch.Tensor, maximum: float) -> torch.Tensor:
    """The paper's int_parameter: int(level * maximum / 10), per image."""
    return torch.floor(level * maximum / 10)


def _signs(generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to span 0..255 (PIL's ImageOps.autocontrast, no cutoff)."""
    values = images.round().clamp(0, 255).double()
    low = values.amin(dim=(2, 3), keepdim=True)
    high = values.amax(dim=(2, 3), keepdim=True)
    # 255 / (high - low) as a tensor division: `255.0 / tensor` multiplies by a reciprocal, an ulp off PIL's scale
    scale = torch.where(high > low, torch.full_like(high, 255.0) / (high - low).clamp_min(1), torch.ones_like(high))
    offset = torch.where(high > low, -low * scale, torch.zeros_like(low))
    return torch.trunc(values * scale + offset).clamp(0, 255).to(images.dtype)  # as PIL: int(v * scale + offset)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Equalise each channel's histogram (PIL's ImageOps.equalize), on the pixels rounded to integers."""
    B, C, H, W = images.shape
    values = images.round().clamp(0, 255).long().reshape(B * C, H * W)
    histogram = torch.zeros(B * C, 256, dtype=torch.long, device=images.device).scatter_add_(
        1, values, torch.ones_like(values)
    )
    last = histogram.flip(1).ne(0).long().argmax(dim=1)  # bins after the last non-empty one
    last_count = histogram.gather(1, (255 - last)[:, None]).squeeze(1)
    step = (H * W - last_count) // 255
    before = histogram.cumsum(1) - histogram  # pixels below each value
    safe = step.clamp_min(1)[:, None]
    lut = ((step[:, None] // 2 + before) // safe).clamp(max=255)
    lut = torch.where(step[:, None] > 0, lut, torch.arange(256, device=images.device).expand(B * C, 256))
    return lut.gather(1, values).reshape(B, C, H, W).to(images.dtype)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (B,) bits of each pixel value."""
    shift = 2.0 ** (8 - bits)[:, None, None, None]
    return torch.floor(images.round().clamp(0, 255) / shift) * shift


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above `threshold` (B,) (PIL's ImageOps.solarize)."""
    values = images.round().clamp(0, 255)
    return torch.where(values >= threshold[:, None, None, None], 255 - values, values)


def pixel_affine(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample through (B, 2, 3) matrices that map each output pixel to the input point it takes.

    Coordinates are (x, y) in pixels with (0, 0) the first pixel's centre, as PIL's Image.transform AFFINE data;
    bilinear, black outside.
    """
    B, _, H, W = images.shape
    dtype, device = images.dtype, images.device
    to_norm = torch.tensor([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=dtype, device=device)
    square = torch.cat([matrix.to(dtype), torch.tensor([[[0, 0, 1]]], dtype=dtype, device=device).expand(B, 1, 3)], 1)
    theta = to_norm @ square @ torch.linalg.inv(to_norm)
    grid = F.affine_grid(theta[:, :2], list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _matrices(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device)[:2].expand(n, 2, 3).clone()


def _apply(name: str, images: torch.Tensor, level: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One operation at strength `level` (B,), in (0, severity], on every image of the batch."""
    n, device = len(images), images.device
    _, _, H, W = images.shape
    if name == "autocontrast":
        return autocontrast(images)
    if name == "equalize":
        return equalize(images)
    if name == "posterize":
        return posterize(images, 4 - _int_parameter(level, 4))
    if name == "solarize":
        return solarize(images, 256 - _int_parameter(level, 256))
    matrix = _matrices(n, device)
    sign = _signs(generator, n, device)
    if name == "rotate":  # PIL rotates counter-clockwise about the centre
        angle = _int_parameter(level, 30) * sign * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        cx, cy = (W - 1) / 2, (H - 1) / 2
        matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin
        matrix[:, 1, 0], matrix[:, 1, 1] = sin, cos
        matrix[:, 0, 2] = cx - cos * cx + sin * cy
        matrix[:, 1, 2] = cy - sin * cx - cos * cy
    elif name == "shear_x":
        matrix[:, 0, 1] = level * 0.3 / 10 * sign
    elif name == "shear_y":
        matrix[:, 1, 0] = level * 0.3 / 10 * sign
    elif name == "translate_x":
        matrix[:, 0, 2] = _int_parameter(level, W / 3) * sign
    elif name == "translate_y":
        matrix[:, 1, 2] = _int_parameter(level, H / 3) * sign
    else:
        raise ValueError(f"unknown AugMix operation {name!r}; known: {', '.join(OPERATIONS)}")
    return pixel_affine(images, matrix)


def augmix(images: torch.Tensor, generator: torch.Generator, severity: int = 3) -> torch.Tensor:
    """AugMix a (B, C, H, W) float batch in [0, 255] (width 3, depth 1-3, Dirichlet(1) and Beta(1, 1) mixing).

    Raises:
        ValueError: if `severity` is not an int in 1..10.
    """
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= MAX_SEVERITY:
        raise ValueError(f"augmix: severity must be an int from 1 to {MAX_SEVERITY}, got {severity!r}")
    n, device = len(images), images.device
    chain_weights = -torch.log(torch.rand(n, WIDTH, generator=generator, device=device).clamp_min(1e-12))
    chain_weights = chain_weights / chain_weights.sum(dim=1, keepdim=True)  # Dirichlet(1, 1, 1)
    mix = torch.zeros_like(images)
    for chain in range(WIDTH):
        depth = torch.randint(1, MAX_DEPTH + 1, (n,), generator=generator, device=device)
        augmented = images
        for step in range(MAX_DEPTH):
            choice = torch.randint(0, len(OPERATIONS), (n,), generator=generator, device=device)
            level = 0.1 + torch.rand(n, generator=generator, device=device) * (severity - 0.1)
            augmented = _apply_chosen(augmented, choice, level, depth > step, generator)
        mix = mix + chain_weights[:, chain, None, None, None] * augmented
    keep = torch.rand(n, generator=generator, device=device)[:, None, None, None]  # Beta(1, 1)
    return keep * images + (1 - keep) * mix


def _apply_chosen(
    images: torch.Tensor, choice: torch.Tensor, level: torch.Tensor, active: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Apply each image's chosen operation (where `active`), one batched call per operation."""
    out = images.clone()
    for k, name in enumerate(OPERATIONS):
        rows = torch.nonzero(active & (choice == k)).flatten()
        if len(rows):
            out[rows] = _apply(name, images[rows], level[rows], generator)
    return out
