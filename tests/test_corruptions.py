"""CIFAR-10-C corruptions: shapes, determinism, severity order, values worked out by hand from the published table."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cifarlab.evaluation.corruption_names import CORRUPTIONS, FAMILIES, parse_corruptions, parse_severities
from cifarlab.evaluation.corruptions import corrupt

RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
}


def _flat(value: int, n: int = 1, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.full((n, 3, h, w), value, dtype=torch.uint8)


def _batch() -> torch.Tensor:
    """Four seeded, smooth (photo-like) colour images plus a flat mid-grey one."""
    g = torch.Generator().manual_seed(0)
    img = F.interpolate(torch.rand(4, 3, 6, 6, generator=g), size=32, mode="bicubic", align_corners=False)
    img = img + 0.03 * torch.randn(4, 3, 32, 32, generator=g)
    return torch.cat([(img.clamp(0, 1) * 255).round().to(torch.uint8), _flat(128)])


BATCH = _batch()


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item()


def test_names_and_families():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert CORRUPTIONS[:3] == ("gaussian_noise", "shot_noise", "impulse_noise")
    assert CORRUPTIONS[-1] == "jpeg_compression"
    assert tuple(FAMILIES) == ("noise", "blur", "weather", "digital")
    assert tuple(n for members in FAMILIES.values() for n in members) == CORRUPTIONS
    assert FAMILIES["weather"] == ("snow", "frost", "fog", "brightness")


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_change_and_determinism(name, severity):
    before = BATCH.clone()
    out = corrupt(BATCH, name, severity, seed=3)
    assert torch.equal(BATCH, before)  # input untouched
    assert out.dtype == torch.uint8 and out.shape == BATCH.shape
    assert not torch.equal(out, BATCH)
    assert torch.equal(out, corrupt(BATCH, name, severity, seed=3))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_seed_matters_only_for_random_corruptions(name):
    a, b = corrupt(BATCH, name, 3, seed=0), corrupt(BATCH, name, 3, seed=1)
    assert torch.equal(a, b) != (name in RANDOM)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "elastic_transform"])
def test_severity_5_moves_further_than_severity_1(name):
    assert _mad(corrupt(BATCH, name, 5), BATCH) > _mad(corrupt(BATCH, name, 1), BATCH)


def test_elastic_severity_1_is_affine_and_severity_5_is_not():
    # The published table puts the largest global affine jitter (0.08 * 32 px) at severity 1 with no elastic field,
    # so severity 1 can move pixels further than 5; what grows is the local distortion. An affine warp of a linear
    # ramp is a linear ramp (exactly, with bilinear sampling), so a plane fits severity 1 to within truncation.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (20 + 4 * xx + 2 * yy).round().to(torch.uint8).expand(1, 3, 32, 32).contiguous()

    def plane_residual(img: torch.Tensor) -> float:
        v = img[0, 0, 10:22, 10:22].double().flatten()
        design = torch.stack([xx[10:22, 10:22].flatten(), yy[10:22, 10:22].flatten(), torch.ones(144)], 1).double()
        fit = torch.linalg.lstsq(design, v[:, None]).solution
        return (design @ fit - v[:, None]).abs().max().item()

    for seed in range(3):
        assert plane_residual(corrupt(ramp, "elastic_transform", 1, seed=seed)) <= 1.0
        assert plane_residual(corrupt(ramp, "elastic_transform", 5, seed=seed)) > 2.0


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_noise_std_matches_published_sigma(severity):
    sigma = {1: 0.04, 5: 0.10}[severity] * 255
    out = corrupt(_flat(128, h=64, w=64), "gaussian_noise", severity, seed=0).double()
    assert out.std().item() == pytest.approx(sigma, rel=0.03)
    assert abs(out.mean().item() - 127.5) < 0.5  # truncation lowers the mean by half a level


def test_shot_noise_std_is_poisson():
    # 0.5 * 50 photons: Poisson(25) / 50 has std 5 / 50 = 0.1, i.e. 25.5 grey levels.
    out = corrupt(_flat(128, h=64, w=64), "shot_noise", 5, seed=0).double()
    assert out.std().item() == pytest.approx(25.5 * (128 / 127.5) ** 0.5, rel=0.04)


def test_impulse_noise_sets_the_published_fraction_to_black_or_white():
    out = corrupt(_flat(128, h=64, w=64), "impulse_noise", 5, seed=0)
    hit = out != 128
    assert set(out[hit].unique().tolist()) == {0, 255}
    assert hit.double().mean().item() == pytest.approx(0.07, abs=0.01)


def test_brightness_adds_the_published_hsv_value_shift():
    # V = 128/255; V' = V + 0.05 -> 140.75 -> 140; V + 0.3 -> 204.5 -> 204 (truncated, as the reference's np.uint8).
    assert corrupt(_flat(128), "brightness", 1).unique().tolist() == [140]
    assert corrupt(_flat(128), "brightness", 5).unique().tolist() == [204]
    # A coloured pixel keeps hue and saturation: (200, 100, 50), V' = min(1, (200 + 76.5) / 255) = 1 -> scale 255/200.
    pixel = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1)
    assert corrupt(pixel, "brightness", 5).flatten().tolist() == [255, 127, 63]
    assert corrupt(_flat(0), "brightness", 2).unique().tolist() == [25]  # black -> grey V' = 0.1


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_contrast_keeps_flat_images_and_each_channel_mean(severity):
    assert torch.equal(corrupt(_flat(77), "contrast", severity), _flat(77))
    halves = _flat(100)
    halves[..., 16:] = 200
    out = corrupt(halves, "contrast", severity)
    factor = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    assert out[..., :16].unique().tolist() == [int(150 - 50 * factor + 1e-3)]
    assert out[..., 16:].unique().tolist() == [int(150 + 50 * factor + 1e-3)]


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "motion_blur", "pixelate", "elastic_transform"])
def test_spatial_corruptions_leave_a_flat_image_flat(name):
    assert torch.equal(corrupt(_flat(90, n=2), name, 5), _flat(90, n=2))


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_is_a_pillow_round_trip_at_the_published_quality(severity):
    quality = {1: 80, 5: 40}[severity]
    out = corrupt(BATCH, "jpeg_compression", severity)
    for img, got in zip(BATCH, out):
        buffer = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
        expected = np.asarray(Image.open(buffer).convert("RGB"))
        assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("severity", [1, 5])
def test_pixelate_is_the_published_box_down_up_resize(severity):
    side = {1: 30, 5: 20}[severity]  # int(32 * 0.95), int(32 * 0.65)
    out = corrupt(BATCH, "pixelate", severity)
    for img, got in zip(BATCH, out):
        small = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((side, side), Image.Resampling.BOX)
        expected = np.asarray(small.resize((32, 32), Image.Resampling.BOX))
        assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)


def test_glass_blur_severity_1_copies_each_pixel_from_itself_or_an_upper_left_neighbour():
    # sigma 0.05 leaves the Gaussian an identity, so only the reference's local "swap" (really a copy) remains.
    img = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = corrupt(img, "glass_blur", 1, seed=0)
    assert torch.equal(out[:, :, :2], img[:, :, :2]) and torch.equal(out[..., :2], img[..., :2])
    candidates = torch.stack([img[:, :, 2 - dy : 32 - dy, 2 - dx : 32 - dx] for dy in (0, 1) for dx in (0, 1)])
    matches = (candidates == out[None, :, :, 2:, 2:]).all(dim=2)  # whole RGB pixel equal
    assert matches.any(dim=0).all()
    assert not torch.equal(out, img)


def test_motion_blur_streaks_a_dot_within_45_degrees_of_horizontal():
    dot = _flat(0)
    dot[..., 16, 16] = 255
    for seed in range(5):
        out = corrupt(dot, "motion_blur", 5, seed=seed)[0, 0].double()
        ys, xs = torch.nonzero(out, as_tuple=True)
        assert len(ys) > 3
        assert ((ys - 16).abs() <= (xs - 16).abs()).all()
        assert ((ys - 16).abs().max() <= 18) and ((xs - 16).abs().max() <= 18)  # width 2 * 9 + 1 taps
        assert out.sum().item() == pytest.approx(255, abs=10)  # normalised kernel, rounding per pixel


@pytest.mark.parametrize("name", ["snow", "frost"])
def test_snow_and_mild_frost_never_darken(name):
    assert (corrupt(BATCH, name, 1) >= BATCH).all()


def test_other_sizes_and_devices_are_kept():
    img = torch.randint(0, 256, (2, 3, 40, 48), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    for name in CORRUPTIONS:
        out = corrupt(img, name, 3)
        assert out.shape == img.shape and out.dtype == torch.uint8 and out.device == img.device, name
    assert corrupt(img[:0], "fog", 1).shape == (0, 3, 40, 48)


def test_global_rngs_are_untouched():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    for name in RANDOM:
        corrupt(BATCH, name, 2, seed=7)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown corruption 'gausian_noise'; did you mean gaussian_noise\?"):
        corrupt(BATCH, "gausian_noise", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True])
def test_severity_out_of_range(severity):
    with pytest.raises(ValueError, match=rf"1\.\.5; got {severity!r}"):
        corrupt(BATCH, "fog", severity)


@pytest.mark.parametrize(
    ("images", "shown"),
    [(BATCH.float(), "torch.float32"), (BATCH[0], r"\(3, 32, 32\)"), (BATCH[:, :1], r"\(5, 1, 32, 32\)")],
)
def test_bad_images(images, shown):
    with pytest.raises(ValueError, match=rf"uint8 tensor of shape \(N, 3, H, W\); got .*{shown}"):
        corrupt(images, "contrast", 1)


def test_parse_corruptions():
    assert parse_corruptions(None) == CORRUPTIONS == parse_corruptions(" ALL ")
    assert parse_corruptions("noise") == FAMILIES["noise"]
    assert parse_corruptions("fog, Gaussian-Noise,noise,fog") == (
        "fog",
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
    )
    with pytest.raises(ValueError, match=r"unknown corruption 'blurr'; did you mean blur"):
        parse_corruptions("snow,blurr")
    with pytest.raises(ValueError, match=r"unknown corruption 'jpeg'; did you mean jpeg_compression\?"):
        parse_corruptions("jpeg")
    with pytest.raises(ValueError, match="no corruption given"):
        parse_corruptions(" , ")


def test_parse_severities():
    assert parse_severities(None) == (1, 2, 3, 4, 5) == parse_severities("all")
    assert parse_severities("5, 1,5") == (5, 1)
    with pytest.raises(ValueError, match=r"1\.\.5; got 6"):
        parse_severities("1,6")
    with pytest.raises(ValueError, match=r"1\.\.5; got 'x'"):
        parse_severities("x")
