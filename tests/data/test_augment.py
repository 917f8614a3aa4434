import json
import math

import pytest
import torch
import torch.nn.functional as F

from cifarlab.data.augment import KERAS_SEED_PROYECTO9, AugmentConfig, Augmenter
from cifarlab.data.augment_ops import (
    _keras_matrices,
    _warp,
    cutout,
    keras_affine,
    random_brightness,
    random_crop,
    random_flip,
)

ALL_ON = AugmentConfig(
    rotation_deg=15,
    width_shift=0.1,
    height_shift=0.1,
    shear_deg=5,
    zoom=0.2,
    horizontal_flip=True,
    brightness=(0.8, 1.2),
    crop_padding=4,
    cutout=8,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, h: int = 32, w: int = 32, seed: int = 123, low: float = 0.0, high: float = 255.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(b, 3, h, w, generator=g)


def ramps(b: int, h: int = 32, w: int = 32) -> torch.Tensor:
    """Channel 0 = 4 * col, channel 1 = 4 * row: bilinear sampling reads back the source coordinates exactly."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return (4 * torch.stack([cols, rows, cols + rows])).expand(b, 3, h, w).clone()


def fixed(b: int = 1, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, h: int = 32, w: int = 32):
    full = lambda v: torch.full((b,), float(v))  # noqa: E731
    return _keras_matrices(full(theta), full(tx), full(ty), full(shear), full(zx), full(zy), h, w)


# Identity and seeding


@pytest.mark.parametrize("op", [keras_affine, random_crop])
def test_identity_settings_reproduce_input(op):
    x = images()
    kwargs = {"padding": 0} if op is random_crop else {}
    out = op(x, gen(), **kwargs)
    assert out is not x and torch.equal(out, x)


def test_identity_matrices_reproduce_input_through_the_resampler():
    x = images(h=12, w=20)
    assert torch.equal(fixed(h=12, w=20), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    torch.testing.assert_close(_warp(x, fixed(b=8, h=12, w=20)), x, atol=1e-3, rtol=0)


def test_disabled_augmenter_returns_input_and_flags():
    x = images()
    assert not AugmentConfig().enabled
    assert Augmenter(AugmentConfig())(x, gen()) is x
    assert ALL_ON.enabled and AugmentConfig(cutout=4).enabled and KERAS_SEED_PROYECTO9.affine
    assert not AugmentConfig(crop_padding=4).affine


def test_same_seed_same_output_different_seed_different():
    x, augment = images(), Augmenter(ALL_ON)
    a, b, c = augment(x, gen(1)), augment(x, gen(1)), augment(x, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_augmenter_applies_keras_order_then_crop_and_cutout():
    x, c = images(), ALL_ON
    g = gen(7)
    y = keras_affine(x, g, rotation_deg=15, width_shift=0.1, height_shift=0.1, shear_deg=5, zoom=(0.8, 1.2))
    y = random_crop(random_brightness(random_flip(y, g), g, 0.8, 1.2), g, 4, "reflect")
    y = cutout(y, g, 8)
    torch.testing.assert_close(Augmenter(c)(x, gen(7)), y, atol=0, rtol=0)


def test_keras_seed_preset_matches_the_notebook():
    c = KERAS_SEED_PROYECTO9
    assert (c.rotation_deg, c.width_shift, c.height_shift, c.shear_deg, c.zoom) == (30, 0.2, 0, 0.5, 0.3)
    assert c.horizontal_flip and c.brightness == (0.9, 1.3) and c.crop_padding == 0 and c.cutout == 0
    out = Augmenter(c)(images(b=16), gen())
    assert out.min() >= 0 and out.max() <= 255


# Affine geometry against hand-built expectations and scipy


@pytest.mark.parametrize("k", [1, 3, -2])
def test_pure_width_shift_moves_a_vertical_bar_and_repeats_the_edge(k):
    x = torch.zeros(1, 3, 16, 16)
    x[..., 0], x[..., 15], x[..., 7] = 50.0, 100.0, 255.0  # left edge, right edge, bar
    out = _warp(x, fixed(ty=k, h=16, w=16))
    expected = x[..., torch.arange(16).add(k).clamp(0, 15)]  # output col c reads input col c + k
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)
    assert out[0, 0, 0].argmax() == 7 - k  # a positive shift moves content towards column 0
    vacated = out[..., 16 - k :] if k > 0 else out[..., :-k]
    assert torch.allclose(vacated, torch.tensor(100.0 if k > 0 else 50.0), atol=1e-3)


def test_pure_height_shift_moves_a_horizontal_bar():
    x = torch.zeros(1, 3, 12, 20)
    x[..., 5, :], x[..., 11, :] = 255.0, 30.0
    out = _warp(x, fixed(tx=2, h=12, w=20))
    torch.testing.assert_close(out, x[..., torch.arange(12).add(2).clamp(0, 11), :], atol=1e-3, rtol=0)
    assert torch.allclose(out[..., 10:, :], torch.tensor(30.0), atol=1e-3)


@pytest.mark.parametrize("h,w", [(16, 16), (9, 9)])
def test_rotation_by_90_degrees_is_rot90_clockwise(h, w):
    x = images(b=2, h=h, w=w)
    clockwise, counter = torch.rot90(x, -1, (-2, -1)), torch.rot90(x, 1, (-2, -1))
    torch.testing.assert_close(_warp(x, fixed(b=2, theta=90, h=h, w=w)), clockwise, atol=0.05, rtol=0)
    torch.testing.assert_close(_warp(x, fixed(b=2, theta=-90, h=h, w=w)), counter, atol=0.05, rtol=0)


def test_zoom_half_enlarges_the_central_half_twice():
    x = images(b=2)
    out = _warp(x, fixed(b=2, zx=0.5, zy=0.5))
    expected = F.interpolate(x[..., 8:24, 8:24], size=(32, 32), mode="bilinear", align_corners=False)
    # interpolate clamps at the crop's edge where we read the neighbouring pixels: skip the outer ring.
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-2, rtol=0)


def _keras_scipy_reference(x: torch.Tensor, theta, tx, ty, shear, zx, zy) -> torch.Tensor:
    """Keras' apply_affine_transform written out with numpy + scipy (centre moved to the true pixel centre)."""
    np = pytest.importorskip("numpy")
    ndimage = pytest.importorskip("scipy.ndimage")
    t, s = math.radians(theta), math.radians(shear)
    rotation = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shear_m = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    h, w = x.shape[-2:]
    oy, ox = (h - 1) / 2, (w - 1) / 2
    m = np.array([[1, 0, oy], [0, 1, ox], [0, 0, 1]]) @ rotation @ shift @ shear_m @ zoom
    m = m @ np.array([[1, 0, -oy], [0, 1, -ox], [0, 0, 1]])
    chans = [ndimage.affine_transform(ch, m[:2, :2], m[:2, 2], order=1, mode="nearest") for ch in x.double().numpy()]
    return torch.from_numpy(np.stack(chans)).float()


@pytest.mark.parametrize(
    "params",
    [
        dict(theta=17),
        dict(tx=1.5, ty=-2.25),
        dict(shear=20),
        dict(zx=0.8, zy=1.3),
        dict(theta=-25, tx=2.0, ty=3.5, shear=10, zx=1.2, zy=0.7),
    ],
)
def test_matches_keras_formula_through_scipy(params):
    p = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0) | params
    x = images(b=1, h=12, w=17)  # not square, to catch swapped axes
    expected = _keras_scipy_reference(x[0], **p)
    torch.testing.assert_close(_warp(x, fixed(h=12, w=17, **p))[0], expected, atol=0.05, rtol=0)


# Drawn parameters stay in range (ramps let bilinear sampling read back the source coordinates)


@pytest.mark.parametrize("width_shift,bound", [(0.25, 8.0), (3.0, 3.0)])
def test_width_shifts_are_drawn_within_range(width_shift, bound):
    out = keras_affine(ramps(256), gen(), width_shift=width_shift)
    shift = out[:, 0, 16, 16] / 4 - 16  # (B,) pixels
    assert shift.abs().max() <= bound + 1e-3 and shift.abs().max() > 0.8 * bound
    assert (shift > 0).any() and (shift < 0).any()
    torch.testing.assert_close(out[:, 1], ramps(256)[:, 1], atol=1e-3, rtol=0)  # rows untouched


def test_height_shifts_are_drawn_within_range():
    out = keras_affine(ramps(256), gen(), height_shift=0.1)
    shift = out[:, 1, 16, 16] / 4 - 16
    assert shift.abs().max() <= 3.2 + 1e-3 and shift.abs().max() > 2.5
    torch.testing.assert_close(out[:, 0], ramps(256)[:, 0], atol=1e-3, rtol=0)


def test_zoom_factors_are_drawn_independently_within_range():
    out = keras_affine(ramps(256), gen(), zoom=(0.7, 1.3))
    zy = (out[:, 0, 16, 20] - out[:, 0, 16, 12]) / 32  # columns
    zx = (out[:, 1, 20, 16] - out[:, 1, 12, 16]) / 32  # rows
    for z in (zx, zy):
        assert z.min() >= 0.7 - 1e-4 and z.max() <= 1.3 + 1e-4 and z.max() - z.min() > 0.5
    assert not torch.allclose(zx, zy)


def test_rotation_and_shear_angles_are_drawn_within_range():
    rot = keras_affine(ramps(256), gen(), rotation_deg=30)
    sin = (rot[:, 0, 16, 16] - rot[:, 0, 15, 16]) / 4  # d(input col)/d(output row) = sin(theta)
    theta = torch.rad2deg(torch.asin(sin.clamp(-1, 1)))
    assert theta.abs().max() <= 30 + 1e-2 and theta.abs().max() > 25
    sheared = keras_affine(ramps(256), gen(), shear_deg=20)
    shear = torch.rad2deg(torch.asin(-(sheared[:, 1, 16, 16] - sheared[:, 1, 16, 15]) / 4))
    assert shear.abs().max() <= 20 + 1e-2 and shear.abs().max() > 15


def test_keras_affine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rotation_deg"):
        keras_affine(images(), gen(), rotation_deg=-1)
    with pytest.raises(ValueError, match="zoom"):
        keras_affine(images(), gen(), zoom=(1.3, 0.7))
    with pytest.raises(ValueError, match="floating point"):
        keras_affine(images().to(torch.uint8), gen(), rotation_deg=10)


# Flip, brightness, crop, cutout


def test_flip_about_half_and_flipped_ones_are_mirrors():
    x = images(b=2000, h=4, w=4)
    out = random_flip(x, gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())
    assert 0.45 < flipped.float().mean() < 0.55
    assert torch.equal(random_flip(x, gen(), p=0.0), x) and torch.equal(random_flip(x, gen(), p=1.0), x.flip(-1))


def test_brightness_factors_within_range_and_constant_per_image():
    x = images(b=512, low=1, high=150)  # 1.3 * 150 < 255: nothing clips
    ratio = random_brightness(x, gen(), 0.6, 1.3) / x
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image.min(1).values, per_image.max(1).values)
    assert per_image.min() >= 0.6 - 1e-5 and per_image.max() <= 1.3 + 1e-5
    assert per_image.min() < 0.65 and per_image.max() > 1.25


def test_brightness_clamps_at_255():
    x = torch.full((4, 3, 8, 8), 250.0)
    x[..., 0, 0] = 100.0
    out = random_brightness(x, gen(), 1.2, 1.3)
    assert torch.equal(out[..., 1:, :], torch.full_like(out[..., 1:, :], 255.0))
    assert (out[..., 0, 0] >= 120 - 1e-4).all() and (out[..., 0, 0] <= 130 + 1e-4).all()
    with pytest.raises(ValueError, match="low <= high"):
        random_brightness(x, gen(), 1.3, 1.2)


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.17, 1.3])
def test_brightness_stretch_is_keras_28s_path_through_pil(factor):
    """Keras <= 2.8 (keras_preprocessing 1.1.2): array_to_img(x) stretches the image to its own min..max and
    truncates to uint8, PIL's Brightness enhancer scales and truncates, img_to_array returns floats."""
    np = pytest.importorskip("numpy")
    from PIL import Image, ImageEnhance

    x = images(b=6, low=40, high=180)  # a low-contrast batch: the stretch changes every image
    x[5] = 77.0  # a flat image: Keras' stretch leaves it all zeros
    ours = random_brightness(x, gen(), factor, factor, stretch=True)
    for i in range(len(x)):
        pixels = x[i].permute(1, 2, 0).numpy().astype(np.float32)
        pixels = pixels - pixels.min()
        if pixels.max() != 0:
            pixels = pixels / pixels.max()
        image = Image.fromarray((pixels * 255).astype("uint8"), "RGB")
        keras = np.asarray(ImageEnhance.Brightness(image).enhance(factor), dtype=np.float32)
        difference = (ours[i].permute(1, 2, 0) - torch.from_numpy(keras)).abs()
        assert difference.max() <= 1 and (difference == 0).float().mean() > 0.99  # float rounding at a boundary
    assert ours[:5].amin(dim=(1, 2, 3)).eq(0).all() and torch.equal(ours[5], torch.zeros_like(ours[5]))
    plain = random_brightness(x, gen(), factor, factor)
    assert not torch.equal(plain, ours) and torch.allclose(plain, (x * factor).clamp(0, 255))


def test_brightness_stretch_is_off_by_default_and_needs_a_brightness_range():
    assert not AugmentConfig(brightness=(0.9, 1.3)).brightness_stretch
    assert KERAS_SEED_PROYECTO9.brightness_stretch  # the seed's step, as Keras up to 2.8 ran it
    with pytest.raises(ValueError, match="brightness_stretch"):
        AugmentConfig(brightness_stretch=True)
    config = AugmentConfig.from_dict({"brightness": [0.9, 1.3], "brightness_stretch": True})
    out = Augmenter(config)(images(b=4, low=60, high=120), gen())
    assert out.amin(dim=(1, 2, 3)).eq(0).all() and (out.amax(dim=(1, 2, 3)) >= 229).all()  # 0.9 * 255, truncated


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_is_a_slice_of_the_padded_image_with_offsets_in_range(mode):
    p, x = 4, images(b=200, h=12, w=12)
    out = random_crop(x, gen(), p, mode)
    padded = F.pad(x, (p,) * 4, mode="reflect") if mode == "reflect" else F.pad(x, (p,) * 4)
    offsets = set()
    for i in range(len(x)):
        windows = {
            (dy, dx): padded[i, :, dy : dy + 12, dx : dx + 12] for dy in range(2 * p + 1) for dx in range(2 * p + 1)
        }
        hits = [shift for shift, window in windows.items() if torch.equal(out[i], window)]
        assert len(hits) == 1, f"sample {i} is not a crop of its padded image"
        offsets.add(hits[0])
    dys, dxs = {dy for dy, _ in offsets}, {dx for _, dx in offsets}
    assert dys == dxs == set(range(2 * p + 1)) and len(offsets) > 60  # every shift in [0, 2p] shows up


def test_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="allowed: reflect, zeros"):
        random_crop(images(), gen(), 4, "replicate")
    with pytest.raises(ValueError, match="smaller than the image"):
        random_crop(images(h=4, w=4), gen(), 4, "reflect")


def test_cutout_fills_size_squares_clipped_at_the_border():
    size, x = 6, images(b=400, h=16, w=16, low=1)  # no zeros before cutout
    out = cutout(x, gen(), size)
    holes = out == 0  # (B, 3, H, W)
    assert torch.equal(holes[:, 0], holes[:, 1]) and torch.equal(holes[:, 0], holes[:, 2])
    assert torch.equal(out[~holes], x[~holes])
    inside = 0
    for hole in holes[:, 0]:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert 0 < height <= size and 0 < width <= size and hole.sum() == height * width  # one rectangle
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width  # contiguous
        touches = rows[0] == 0 or cols[0] == 0 or rows[-1] == 15 or cols[-1] == 15
        if not touches:  # fully inside: exactly size x size
            assert hole.sum() == size * size
            inside += 1
    assert inside > 50
    assert torch.equal(cutout(x, gen(), size, fill=7.0) == 7.0, holes)


# AugmentConfig


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(rotation_deg=-1), "rotation_deg"),
        (dict(width_shift=-0.1), "width_shift"),
        (dict(height_shift=float("nan")), "height_shift"),
        (dict(shear_deg=-2), "shear_deg"),
        (dict(zoom=1.0), "zoom"),
        (dict(brightness=(1.3, 0.9)), "brightness"),
        (dict(brightness=(0.9,)), "brightness"),
        (dict(crop_padding=-4), "crop_padding"),
        (dict(crop_padding=2.5), "crop_padding"),
        (dict(cutout=-1), "cutout"),
        (dict(crop_mode="replicate"), "crop_mode"),
        (dict(horizontal_flip="yes"), "horizontal_flip"),
        (dict(brightness=(0.9, 1.3), brightness_stretch=1), "brightness_stretch"),
    ],
)
def test_config_validation_names_the_option(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AugmentConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_with_suggestions():
    with pytest.raises(ValueError) as err:
        AugmentConfig.from_dict({"rotaton": 10})
    msg = str(err.value)
    assert msg.startswith("unknown augmentation option 'rotaton'; did you mean rotation_deg?")
    assert "allowed: rotation_deg, width_shift" in msg and "cutout" in msg
    with pytest.raises(ValueError, match="unknown augmentation option 'qqq'; allowed:"):
        AugmentConfig.from_dict({"qqq": 1})


def test_from_dict_and_to_dict_round_trip_through_json():
    cfg = AugmentConfig.from_dict({"brightness": [0.9, 1.3], "crop_padding": 4, "crop_mode": "zeros"})
    assert cfg.brightness == (0.9, 1.3) and cfg.crop_mode == "zeros"
    hash(cfg)
    for c in (cfg, ALL_ON, KERAS_SEED_PROYECTO9, AugmentConfig()):
        d = json.loads(json.dumps(c.to_dict()))
        assert AugmentConfig.from_dict(d) == c
    assert AugmentConfig(brightness=[1, 2]).brightness == (1.0, 2.0)
    assert Augmenter({"cutout": 4}).config == AugmentConfig(cutout=4)


# Size and device


def test_full_batch_runs_and_keeps_shape_dtype_range():
    x = images(b=512)
    out = Augmenter(ALL_ON)(x, gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_without_host_syncs():
    x = images(b=512).cuda()
    augment = Augmenter(ALL_ON)
    augment(x, torch.Generator("cuda").manual_seed(0))  # warm up kernels
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = augment(x, torch.Generator("cuda").manual_seed(0))
        b = augment(x.half(), torch.Generator("cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert a.device == x.device and a.shape == x.shape and b.dtype == torch.float16
    assert torch.equal(a, augment(x, torch.Generator("cuda").manual_seed(0)))
    torch.testing.assert_close(b.float(), a, atol=3.0, rtol=0.02)
