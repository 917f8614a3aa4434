"""CIFAR-10-C's parameters at every severity: pinned to the published generator, and seen in what `corrupt` does.

The published values are transcribed from the CIFAR variant of the reference script (`make_cifar_c.py` in
hendrycks/robustness, ImageNet-C/create_c), in its own units, so a slip in our tables (a swapped row, a value
from the ImageNet script, a severity off by one) fails here. Where a parameter shows plainly in the output, a
second test checks it there at each severity, from the published value and the textbook operation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cifarlab.evaluation import corruptions
from cifarlab.evaluation.corruptions import corrupt

IMSIZE = 32  # the published script's image-size constant (elastic_transform's parameters are multiples of it)

PUBLISHED = {
    "_GAUSSIAN": [0.04, 0.06, 0.08, 0.09, 0.10],
    "_SHOT": [500, 250, 100, 75, 50],
    "_IMPULSE": [0.01, 0.02, 0.03, 0.05, 0.07],
    "_DEFOCUS": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (sigma, max_delta, iterations); ours drops max_delta, 1 at every severity
    "_GLASS": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "_MOTION": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "_SNOW": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "_FROST": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "_FOG": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "_BRIGHTNESS": [0.05, 0.1, 0.15, 0.2, 0.3],
    "_CONTRAST": [0.75, 0.5, 0.4, 0.3, 0.15],
    "_ELASTIC": [
        (IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08),
        (IMSIZE * 0.05, IMSIZE * 0.2, IMSIZE * 0.07),
        (IMSIZE * 0.08, IMSIZE * 0.06, IMSIZE * 0.06),
        (IMSIZE * 0.1, IMSIZE * 0.04, IMSIZE * 0.05),
        (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03),
    ],
    "_PIXELATE": [0.95, 0.9, 0.85, 0.75, 0.65],
    "_JPEG": [80, 65, 58, 50, 40],
}
# zoom_blur's factors are np.arange(1, stop, 0.01) for these stops; float round-off puts the stop itself in
ZOOM_STOPS = [1.06, 1.11, 1.16, 1.21, 1.26]


def ours(table: str) -> list:
    """Our table in the published units: glass gets its max_delta back, elastic its multiples of the image size."""
    rows = list(getattr(corruptions, table))
    if table == "_GLASS":
        return [(sigma, 1, iterations) for sigma, iterations in rows]
    if table == "_ELASTIC":
        return [tuple(IMSIZE * value for value in row) for row in rows]
    return rows


@pytest.mark.parametrize("table", sorted(PUBLISHED))
def test_every_severity_of_every_table_is_the_published_one(table):
    assert np.allclose(np.array(ours(table), dtype=float), np.array(PUBLISHED[table], dtype=float), rtol=0, atol=1e-12)


def test_zoom_counts_the_published_float_ranges():
    assert list(corruptions._ZOOM) == [len(np.arange(1, stop, 0.01)) for stop in ZOOM_STOPS] == [7, 12, 16, 21, 26]


def _dot() -> torch.Tensor:
    """One white pixel at (16, 16) on black: a blur's output there is its kernel's centre weight."""
    image = torch.zeros((1, 3, 32, 32), dtype=torch.uint8)
    image[..., 16, 16] = 255
    return image


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_defocus_blurs_a_dot_by_the_published_disk_and_alias_blur(severity):
    # the reference's kernel: a disk of the radius on a 17x17 grid, normalised, then a 3x3 Gaussian of sigma
    # alias_blur; at the dot's own pixel that leaves the disk's value weighed by the Gaussian's 3x3 taps
    radius, alias_blur = PUBLISHED["_DEFOCUS"][severity - 1]
    grid = np.arange(-8, 9)
    in_disk = grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2
    taps = np.exp(-(np.array([-1.0, 0.0, 1.0]) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    centre = (np.outer(taps, taps) * in_disk[7:10, 7:10]).sum() / in_disk.sum()
    out = corrupt(_dot(), "defocus_blur", severity)
    assert out[0, :, 16, 16].tolist() == [math.floor(255 * centre + 1e-3)] * 3


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_motion_blur_keeps_the_published_sigmas_share_on_the_dot(severity):
    # ImageMagick's motion kernel: taps i = 0 .. 2 ceil(radius), weight exp(-i^2 / 2 sigma^2), normalised; the dot's
    # own pixel is read by tap 0 only, whatever the angle
    radius, sigma = PUBLISHED["_MOTION"][severity - 1]
    weights = np.exp(-(np.arange(2 * math.ceil(radius) + 1) ** 2) / (2 * sigma**2))
    for seed in range(3):
        out = corrupt(_dot(), "motion_blur", severity, seed=seed)
        assert out[0, :, 16, 16].tolist() == [round(255 / weights.sum())] * 3


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_fog_keeps_the_brightest_level_and_lowers_the_darkest_by_the_published_amount(severity):
    # x -> (x + c * haze) * max / (max + c), haze in [0, 1] reaching both ends: a flat image of value v keeps v where
    # the haze is thickest and falls to v^2 / (v + c) where it is thinnest
    amount = PUBLISHED["_FOG"][severity - 1][0]
    v = 128 / 255
    out = corrupt(torch.full((2, 3, 32, 32), 128, dtype=torch.uint8), "fog", severity, seed=severity)
    for image in out:
        assert image.max().item() == 128
        assert image.min().item() == math.floor(255 * v * v / (v + amount) + 1e-3)
