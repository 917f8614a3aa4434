"""AugMix: its operations against PIL's (which the paper's code calls), and the mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cifarlab.data.augment import AugmentConfig, Augmenter
from cifarlab.data.augmix import OPERATIONS, augmix, autocontrast, equalize, pixel_affine, posterize, solarize


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: a gradient plus noise, squeezed into a narrow range so that autocontrast has work."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 170, 32)[None, :, None, None]
    return np.clip(ramp + rng.normal(0, 18, (n, 32, 32, 3)), 0, 255).astype(np.uint8).transpose(0, 1, 2, 3)


def _torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def _pil(images: np.ndarray, op) -> np.ndarray:
    return np.stack([np.asarray(op(Image.fromarray(image))) for image in images])


def _back(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (autocontrast, ImageOps.autocontrast),
        (equalize, ImageOps.equalize),
        (lambda x: posterize(x, torch.full((len(x),), 3.0)), lambda im: ImageOps.posterize(im, 3)),
        (lambda x: solarize(x, torch.full((len(x),), 128.0)), lambda im: ImageOps.solarize(im, 128)),
    ],
    ids=["autocontrast", "equalize", "posterize", "solarize"],
)
def test_the_colour_operations_equal_pils(ours, theirs):
    images = _images()
    assert np.array_equal(_back(ours(_torch(images))).astype(np.uint8), _pil(images, theirs))


def test_translate_equals_pils_affine_transform():
    images = _images(2)
    matrix = torch.tensor([[[1.0, 0, 5], [0, 1, -3]]]).expand(2, 2, 3)
    ours = _back(pixel_affine(_torch(images), matrix)).round().astype(np.uint8)
    theirs = _pil(images, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 5, 0, 1, -3), resample=Image.BILINEAR))
    assert np.array_equal(ours, theirs)
    assert (ours[:, :, -5:] == 0).all() and (ours[:, :3] == 0).all()  # black where the image moved away


def test_rotate_turns_the_way_pil_does():
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    images[0, 4:8, 14:18] = 255  # a square above the centre
    matrix = torch.zeros(1, 2, 3)
    angle = torch.tensor(90 * np.pi / 180)  # as _apply builds it for +90 degrees
    c = 15.5
    matrix[0] = torch.tensor(
        [
            [torch.cos(angle), -torch.sin(angle), c - torch.cos(angle) * c + torch.sin(angle) * c],
            [torch.sin(angle), torch.cos(angle), c - torch.sin(angle) * c - torch.cos(angle) * c],
        ]
    )
    ours = _back(pixel_affine(_torch(images), matrix)).round().astype(np.uint8)
    theirs = _pil(images, lambda im: im.rotate(90, resample=Image.BILINEAR))
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 1.0
    assert theirs[0, 14:18, 4:8].min() == 255 and ours[0, 14:18, 4:8].min() >= 250  # counter-clockwise: to the left


def test_augmix_mixes_within_range_and_repeats_with_its_seed():
    images = _torch(_images(64))
    first = augmix(images, torch.Generator().manual_seed(3))
    again = augmix(images, torch.Generator().manual_seed(3))
    other = augmix(images, torch.Generator().manual_seed(4))
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 255
    changed = (first - images).abs().mean(dim=(1, 2, 3))
    assert (changed > 0.5).float().mean() > 0.9  # nearly every image changed (the weight kept on it is random)
    assert (changed < 60).all()  # and stays a version of itself


def test_every_operation_runs_at_the_strongest_severity():
    images = _torch(_images(len(OPERATIONS) * 4))
    out = augmix(images, torch.Generator().manual_seed(0), severity=10)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 255


def test_the_option_in_a_run_config():
    assert Augmenter(AugmentConfig(augmix=3)).config.enabled
    images = _torch(_images(8))
    out = Augmenter(AugmentConfig(augmix=3, crop_padding=2))(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and not torch.equal(out, images)
    for bad in (11, -1, True, 2.5):
        with pytest.raises(ValueError, match="augmix must be 0 \\(off\\) or a severity from 1 to 10"):
            AugmentConfig.from_dict({"augmix": bad})
    with pytest.raises(ValueError, match="severity must be an int from 1 to 10"):
        augmix(images, torch.Generator(), severity=0)
