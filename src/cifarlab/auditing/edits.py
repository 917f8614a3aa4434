"""The edits that make a near-duplicate of a photograph: what the near-duplicate finder is measured on.

Each takes one (3, H, W) float image (0..255) and a NumPy generator and returns the edited image: the same shot
shifted, cropped, rescaled, recoloured or re-encoded, as CIFAR-10's own near-duplicates between its test and training
images mostly are (ciFAIR, Barz & Denzler 2020). `make_near_duplicates` edits distinct images once each, the edits
dealt out in turn, for `benchmarks/near_duplicates.py` and the tests.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _resize(image: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(image[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]


def shift(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Moved by 2 to 5 pixels along each axis (of a 32-pixel side), the uncovered border filled with its edge."""
    side = image.shape[-1]
    dx, dy = (round(int(rng.integers(2, 6)) * side / 32) * int(rng.choice([-1, 1])) for _ in range(2))
    pad = max(abs(dx), abs(dy))
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0]
    return padded[:, pad + dy : pad + dy + side, pad + dx : pad + dx + side]


def crop(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A square of 75 to 90 % of the side, anywhere, resized back to the full side."""
    side = image.shape[-1]
    kept = round(side * float(rng.uniform(0.75, 0.9)))
    top, left = (int(rng.integers(0, side - kept + 1)) for _ in range(2))
    return _resize(image[:, top : top + kept, left : left + kept], side)


def rescale(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Shrunk to 45 to 75 % of its side and enlarged back: the detail of a smaller original."""
    side = image.shape[-1]
    return _resize(_resize(image, round(side * float(rng.uniform(0.45, 0.75)))), side)


def colour(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Saturation x0.4-1.6, contrast and brightness x0.7-1.3, each channel's gain x0.9-1.1 (white balance)."""
    grey = image.mean(dim=0, keepdim=True)
    image = grey + (image - grey) * float(rng.uniform(0.4, 1.6))
    mean = image.mean()
    image = (mean + (image - mean) * float(rng.uniform(0.7, 1.3))) * float(rng.uniform(0.7, 1.3))
    return (image * torch.tensor(rng.uniform(0.9, 1.1, 3), dtype=image.dtype)[:, None, None]).clamp(0, 255)


def jpeg(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Re-encoded as JPEG of quality 30 to 70."""
    pixels = image.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(rng.integers(30, 71)))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float()


def combined(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A crop, then a colour change, then a re-encoding."""
    return jpeg(colour(crop(image, rng), rng), rng)


EDITS: dict[str, Callable[[torch.Tensor, np.random.Generator], torch.Tensor]] = {
    "shift": shift,
    "crop": crop,
    "rescale": rescale,
    "colour": colour,
    "jpeg": jpeg,
    "combined": combined,
}


def make_near_duplicates(
    images: torch.Tensor, per_edit: int, seed: int = 0, edits: tuple[str, ...] = tuple(EDITS)
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Edit `per_edit * len(edits)` distinct images of `images` ((N, 3, H, W) uint8) once each.

    Returns:
        (copies, sources, kinds): the edited images (uint8), the index in `images` each was made from, and the name
        of its edit.
    """
    rng = np.random.default_rng(seed)
    count = per_edit * len(edits)
    if count > len(images):
        raise ValueError(f"{count} near-duplicates need {count} distinct images, there are {len(images)}")
    sources = torch.from_numpy(rng.choice(len(images), size=count, replace=False))
    kinds = [edits[i % len(edits)] for i in range(count)]
    copies = [EDITS[kind](images[int(s)].float(), rng).clamp(0, 255).round().byte() for s, kind in zip(sources, kinds)]
    return torch.stack(copies) if copies else images[:0].clone(), sources, kinds
