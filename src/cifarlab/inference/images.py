"""Image decoding shared by the folder loader (training) and prediction: one function, one filter."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The decoders Pillow may use. Opening only these keeps rarely used (and rarely audited) decoders out of reach
# of a user's or an uploader's file (Pillow's JPEG opener also reads cameras' multi-picture JPEGs).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
RESAMPLE = Image.Resampling.BICUBIC
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # "I" too: older Pillows open 16-bit PNGs as I


def decode_image(source: str | Path | BinaryIO, image_size: int, *, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as an (S, S, 3) uint8 RGB array, exactly as the models were trained.

    EXIF orientation is applied, every mode becomes RGB (see `to_rgb`), and the image is resized to
    `image_size` square with bicubic filtering, without keeping the aspect ratio: a non-square photo is
    squashed, never cropped, as the image-folder loader does for training.

    Args:
        source: a path or a binary file object.
        image_size: side of the returned square image, in pixels.
        max_pixels: refuse images with more pixels than this (checked before decoding). `None` keeps
            Pillow's own decompression-bomb limit, which is then raised as an error, not a warning.

    Raises:
        ValueError: if the file is empty, not an image of an accepted format, truncated, or too large.
        OSError: if a path cannot be read (missing, a folder, no permission).
    """
    if isinstance(source, (str, Path)) and os.path.getsize(source) == 0:
        raise ValueError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ValueError(f"image of {width}x{height} pixels is over the limit of {max_pixels:,} pixels")
                return prepare_image(image, image_size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ValueError(f"image too large (decompression-bomb limit): {error}") from None
        except Image.UnidentifiedImageError:
            raise ValueError(f"not an image ({'/'.join(IMAGE_FORMATS)} accepted)") from None
        except ValueError:
            raise
        except Exception as error:  # truncated or corrupt files raise OSError, SyntaxError, struct.error, ...
            raise ValueError(f"unreadable image ({type(error).__name__}: {error})") from None


def prepare_image(image: Image.Image, image_size: int) -> np.ndarray:
    """An opened image -> (S, S, 3) uint8 RGB: EXIF orientation, `to_rgb`, then a bicubic squash to S x S."""
    image = to_rgb(ImageOps.exif_transpose(image))
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), RESAMPLE)
    return np.array(image)  # a writable copy: torch.from_numpy warns about read-only arrays


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB: alpha onto white, 16-bit and [0, 1] float images scaled to 8 bits, the rest as Pillow.

    32-bit integers above 65535 and floats outside [0, 1] have no known white level: they raise ValueError.

    White, because a transparent background is shown on white by browsers and viewers: what the user sees
    is what the model gets.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:  # Pillow would clip these to 255 (white) instead of scaling
        values = np.asarray(image, dtype=np.int64)
        if values.max(initial=0) > 65535:  # a true 32-bit image: its white level is unknown
            raise ValueError(f"32-bit integer image with values up to {values.max()}: convert it to 8 or 16 bits")
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "F":  # Pillow would clip floats to 0 or 1 (black) instead of scaling
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        if not 0.0 <= low <= high <= 1.0:  # NaN fails every comparison; infinities fail the bounds
            raise ValueError(
                f"floating-point image with values in [{low:g}, {high:g}], not [0, 1]: convert it to 8 bits"
            )
        return Image.fromarray(np.rint(values * 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:]
        rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255  # alpha-composite onto white
        return Image.fromarray(rgb.astype(np.uint8))
    return image.convert("RGB")


def is_image_file(name: str) -> bool:
    """Whether a file name is visible and has one of `IMAGE_SUFFIXES` (any case)."""
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


def find_images(paths: list[str | Path]) -> list[Path]:
    """Expand directories (recursively, sorted, image suffixes only); files are kept as given, in order.

    Raises:
        ValueError: for a directory that holds no image file (a user would otherwise see nothing at all).
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if is_image_file(p.name) and p.is_file())
            if not images:
                raise ValueError(f"{path}: no image files in this folder or below ({'/'.join(IMAGE_FORMATS)})")
            found += images
        else:
            found.append(path)
    return found
