"""The augmentation ops, batched and seeded, on the device: Keras' ImageDataGenerator transforms, crop, cutout.

Every op is pure, `(images, generator, ...) -> images`: it takes a float (B, C, H, W) batch in the uint8 range
[0, 255] (not yet rescaled), draws every random number from the explicit `torch.Generator` (which must live on the
images' device), and returns a new tensor of the same shape and dtype. The ops never loop over samples and never sync
with the host, so they run the same on CPU and CUDA.

Conventions, shared with Keras (`keras.preprocessing.image.apply_affine_transform`, which calls
`scipy.ndimage.affine_transform`):
    * The affine matrix maps OUTPUT pixel coordinates (row, col) to INPUT coordinates, about the image centre.
    * A positive rotation turns the content clockwise as displayed (row 0 at the top): a 90 degree turn equals
      `torch.rot90(images, k=-1, dims=(-2, -1))`.
    * A positive shift of k pixels moves the content k pixels towards row / column 0 (up / left); the vacated side
      repeats the edge pixels (Keras' fill_mode='nearest').
    * A zoom factor below 1 enlarges the content (0.5 shows the central half at twice the size).
    * Keras' `zx` scales rows and `zy` scales columns (its naming, kept here).

Deliberate differences from Keras, each tiny or a Keras quirk:
    * The centre is the true pixel centre ((H - 1) / 2, (W - 1) / 2); Keras uses (H / 2 + 0.5, W / 2 + 0.5), one
      pixel off, which adds up to a ~1 px translation whenever it rotates, shears or zooms.
    * Shift ranges >= 1 draw a continuous number of pixels; Keras draws whole pixels when the range is an int.
    * Brightness multiplies the float pixel values and clips to [0, 255], as Keras 2.9 on does, less its uint8
      truncations (under one level); `random_brightness(stretch=True)` is Keras 2.8's path, which first stretches
      each image to its own min..max and truncates to uint8 (tested against PIL).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = [
    "CROP_MODES",
    "CropMode",
    "check_range",
    "cutout",
    "keras_affine",
    "min_max_stretch",
    "random_brightness",
    "random_crop",
    "random_flip",
]

CropMode = Literal["reflect", "zeros"]
CROP_MODES: tuple[str, ...] = get_args(CropMode)


def _check_images(images: torch.Tensor, op: str, *, need_float: bool = False) -> None:
    """Raise ValueError unless `images` is a (B, C, H, W) batch (floating point when `need_float`)."""
    if images.ndim != 4:
        raise ValueError(f"{op} expects a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if need_float and not images.is_floating_point():
        raise ValueError(f"{op} expects floating point images in [0, 255], got dtype {images.dtype}")


def check_range(op: str, name: str, value: float) -> None:
    """Raise ValueError, naming `op` and `name`, unless `value` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value!r}")


def _uniform(
    generator: torch.Generator, shape: tuple[int, ...], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """Draw float32 samples ~ U(low, high) from `generator`."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _symmetric(generator: torch.Generator, n: int, bound: float, device: torch.device) -> torch.Tensor:
    """Draw n samples ~ U(-bound, bound), or zeros without touching the generator when bound is 0 (Keras skips)."""
    if bound == 0:
        return torch.zeros(n, device=device)
    return _uniform(generator, (n,), -bound, bound, device)


def _keras_matrices(
    theta_deg: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    shear_deg: torch.Tensor,
    zx: torch.Tensor,
    zy: torch.Tensor,
    H: int,
    W: int,
) -> torch.Tensor:
    """Build (B, 2, 3) `affine_grid` thetas from per-sample (B,) Keras parameters (tx: rows, ty: cols, in pixels)."""
    theta, shear = torch.deg2rad(theta_deg.float()), torch.deg2rad(shear_deg.float())
    zeros, ones = torch.zeros_like(theta), torch.ones_like(theta)

    def mat(*rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (B, 3, 3)

    rotation = mat((theta.cos(), -theta.sin(), zeros), (theta.sin(), theta.cos(), zeros), (zeros, zeros, ones))
    shift = mat((ones, zeros, tx.float()), (zeros, ones, ty.float()), (zeros, zeros, ones))
    shear_m = mat((ones, -shear.sin(), zeros), (zeros, shear.cos(), zeros), (zeros, zeros, ones))
    zoom = mat((zx.float(), zeros, zeros), (zeros, zy.float(), zeros), (zeros, zeros, ones))
    # Maps centred output (row, col) to centred input (row, col), in pixels; identity factors are exact.
    t = rotation @ shift @ shear_m @ zoom  # (B, 3, 3)

    # affine_grid works in (x=col, y=row) normalised by the half extent (align_corners=True: -1, 1 = pixel centres
    # of the first and last pixel), so swap the axes and rescale: theta[i, j] = B[i, j] * half[j] / half[i].
    half_x, half_y = (W - 1) / 2, (H - 1) / 2
    row0 = torch.stack([t[:, 1, 1], t[:, 1, 0] * (half_y / half_x), t[:, 1, 2] / half_x], dim=-1)
    row1 = torch.stack([t[:, 0, 1] * (half_x / half_y), t[:, 0, 0], t[:, 0, 2] / half_y], dim=-1)
    return torch.stack([row0, row1], dim=-2)  # (B, 2, 3)


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, H, W) images through (B, 2, 3) thetas: bilinear, edge pixels repeated outside."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=True)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def keras_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    rotation_deg: float = 0.0,
    width_shift: float = 0.0,
    height_shift: float = 0.0,
    shear_deg: float = 0.0,
    zoom: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Apply Keras' ImageDataGenerator affine transform, one random transform per sample, in one batched resample.

    Per sample, as in `ImageDataGenerator.get_random_transform`: rotation ~ U(-rotation_deg, rotation_deg) degrees;
    column shift ~ U(-width_shift, width_shift) times W pixels (or pixels when width_shift >= 1); row shift likewise
    from height_shift and H; shear ~ U(-shear_deg, shear_deg) degrees; zoom factors zx (rows) and zy (cols) drawn
    independently from U(zoom[0], zoom[1]). A component whose range is empty draws nothing from the generator.
    See the module docstring for the sign conventions.

    Args:
        images: (B, C, H, W) float batch in [0, 255], H and W >= 2.
        generator: source of all random draws, on the images' device.
        rotation_deg: rotation range in degrees (Keras' rotation_range).
        width_shift: column shift range, a fraction of W below 1 or pixels from 1 on (Keras' width_shift_range).
        height_shift: row shift range, a fraction of H below 1 or pixels from 1 on (Keras' height_shift_range).
        shear_deg: shear range in degrees (Keras' shear_range, which is in degrees too).
        zoom: (low, high) zoom factors; Keras' zoom_range=0.3 means (0.7, 1.3).

    Returns:
        The transformed (B, C, H, W) batch, same dtype; a copy of `images` when every range is empty.

    Raises:
        ValueError: for a negative range, a bad zoom pair, or images that are not a float batch of at least 2x2.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> out = keras_affine(images, gen, rotation_deg=30, width_shift=0.2, zoom=(0.7, 1.3))
    """
    _check_images(images, "keras_affine", need_float=True)
    ranges = {"rotation_deg": rotation_deg, "width_shift": width_shift, "height_shift": height_shift}
    for name, value in {**ranges, "shear_deg": shear_deg}.items():
        check_range("keras_affine", name, value)
    if len(zoom) != 2 or not (0 < zoom[0] <= zoom[1] < math.inf):
        raise ValueError(f"keras_affine: zoom must be a pair (low, high) with 0 < low <= high, got {zoom!r}")
    B, _, H, W = images.shape
    if H < 2 or W < 2:
        raise ValueError(f"keras_affine needs images of at least 2x2 pixels, got {H}x{W}")
    zoom_on = tuple(zoom) != (1.0, 1.0)
    if not (rotation_deg or width_shift or height_shift or shear_deg or zoom_on):
        return images.clone()

    device = images.device
    theta = _symmetric(generator, B, rotation_deg, device)
    tx = _symmetric(generator, B, height_shift * H if height_shift < 1 else height_shift, device)  # rows
    ty = _symmetric(generator, B, width_shift * W if width_shift < 1 else width_shift, device)  # cols
    shear = _symmetric(generator, B, shear_deg, device)
    if zoom_on:
        zx, zy = _uniform(generator, (2, B), zoom[0], zoom[1], device).unbind(0)
    else:
        zx = zy = torch.ones(B, device=device)
    return _warp(images, _keras_matrices(theta, tx, ty, shear, zx, zy, H, W))


def random_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability `p`.

    Args:
        images: (B, C, H, W) batch.
        generator: source of the random draws, on the images' device.
        p: probability that a given image is flipped.

    Returns:
        The (B, C, H, W) batch with the chosen images mirrored.

    Raises:
        ValueError: if `p` is outside [0, 1] or `images` is not 4-D.
    """
    _check_images(images, "random_flip")
    if not (0 <= p <= 1):
        raise ValueError(f"random_flip: p must be a probability in [0, 1], got {p!r}")
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def min_max_stretch(images: torch.Tensor) -> torch.Tensor:
    """Each image of a (B, C, H, W) float batch stretched to its own min..max -> 0..255, truncated to whole values.

    Over all channels, as Keras' `array_to_img(x, scale=True)` does before `astype('uint8')`; a flat image becomes
    all 0.
    """
    shifted = images - images.amin(dim=(1, 2, 3), keepdim=True)
    span = shifted.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(span > 0, shifted / span.clamp_min(1e-12), shifted).mul_(255).floor_()  # Keras' order of ops


def random_brightness(
    images: torch.Tensor, generator: torch.Generator, low: float, high: float, *, stretch: bool = False
) -> torch.Tensor:
    """Multiply each image by a factor ~ U(low, high), then clip to the uint8 range [0, 255].

    Args:
        images: (B, C, H, W) float batch in [0, 255] (brightness comes before any rescale, as in Keras).
        generator: source of the random draws, on the images' device.
        low: smallest factor (Keras' brightness_range[0]).
        high: largest factor (Keras' brightness_range[1]).
        stretch: as Keras up to 2.8 (keras_preprocessing 1.1.2), whose brightness shift converts each image to PIL
            with `array_to_img(scale=True)`: the image is first stretched to its own min..max -> 0..255 over all
            channels and truncated to uint8, and PIL's `ImageEnhance.Brightness` truncates its result to uint8 too.
            Keras 2.9 on passes scale=False and leaves the range alone.

    Returns:
        The (B, C, H, W) batch, clipped to [0, 255].

    Raises:
        ValueError: unless 0 <= low <= high, or if `images` is not a float batch.
    """
    _check_images(images, "random_brightness", need_float=True)
    if not (0 <= low <= high < math.inf):
        raise ValueError(f"random_brightness: need 0 <= low <= high, got low={low!r}, high={high!r}")
    factor = _uniform(generator, (images.shape[0],), low, high, images.device)  # (B,)
    if stretch:
        images = min_max_stretch(images)
    out = (images * factor.to(images.dtype)[:, None, None, None]).clamp(0, 255)
    return out.floor_() if stretch else out


def random_crop(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, mode: CropMode = "reflect"
) -> torch.Tensor:
    """Pad by `padding` pixels, then crop back to H x W at a random offset per image (a random translation).

    Args:
        images: (B, C, H, W) batch.
        generator: source of the random draws, on the images' device.
        padding: pixels added on each side; the crop offset is drawn from [0, 2 * padding] on each axis.
        mode: "reflect" mirrors the border (without repeating it), "zeros" pads with 0.

    Returns:
        The translated (B, C, H, W) batch; a copy when `padding` is 0.

    Raises:
        ValueError: for an unknown mode, a negative padding, or reflect padding not smaller than H and W.
    """
    _check_images(images, "random_crop")
    if mode not in CROP_MODES:
        raise ValueError(f"random_crop: unknown mode {mode!r}; allowed: {', '.join(CROP_MODES)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"random_crop: padding must be an int >= 0 (pixels), got {padding!r}")
    B, C, H, W = images.shape
    if padding == 0:
        return images.clone()
    if mode == "reflect" and padding >= min(H, W):
        raise ValueError(f"random_crop: reflect padding must be smaller than the image ({H}x{W}), got {padding}")
    pad = (padding,) * 4
    padded = F.pad(images, pad, mode="reflect") if mode == "reflect" else F.pad(images, pad)  # (B, C, H+2p, W+2p)

    dev = images.device
    dy, dx = torch.randint(0, 2 * padding + 1, (2, B), generator=generator, device=dev)  # (B,) each
    rows = dy[:, None] + torch.arange(H, device=dev)  # (B, H)
    cols = dx[:, None] + torch.arange(W, device=dev)  # (B, W)
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def cutout(images: torch.Tensor, generator: torch.Generator, size: int, fill: float = 0.0) -> torch.Tensor:
    """Fill a size x size square at a random centre per image (DeVries and Taylor, 2017).

    The centre is uniform over all pixels, so squares near the border are clipped. For an even size the square
    spans [centre - size // 2, centre + size // 2) on each axis.

    Args:
        images: (B, C, H, W) batch.
        generator: source of the random draws, on the images' device.
        size: side of the square in pixels; 0 disables.
        fill: value written into the square (0 is black in the [0, 255] range).

    Returns:
        The (B, C, H, W) batch with the squares filled; a copy when `size` is 0.

    Raises:
        ValueError: if `size` is not an int >= 0.
    """
    _check_images(images, "cutout")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"cutout: size must be an int >= 0 (pixels), got {size!r}")
    B, _, H, W = images.shape
    if size == 0:
        return images.clone()
    dev = images.device
    top = torch.randint(0, H, (B,), generator=generator, device=dev) - size // 2  # (B,)
    left = torch.randint(0, W, (B,), generator=generator, device=dev) - size // 2  # (B,)
    rows, cols = torch.arange(H, device=dev), torch.arange(W, device=dev)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (B, W)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return images.masked_fill(mask, fill)
