"""Which augmentations a run applies (`AugmentConfig`) and the chain that applies them in order (`Augmenter`).

The ops themselves, and their conventions (shared with Keras), are in `cifarlab.data.augment_ops`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cifarlab.data.augment_ops import (
    CROP_MODES,
    CropMode,
    check_range,
    cutout,
    keras_affine,
    random_brightness,
    random_crop,
    random_flip,
)
from cifarlab.data.augmix import MAX_SEVERITY, augmix

__all__ = ["KERAS_SEED_PROYECTO9", "AugmentConfig", "Augmenter"]


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply; everything is off by default. Keras-style names mean what they mean in Keras.

    Raises:
        ValueError: from `__post_init__`, naming the option that is out of range.
    """

    rotation_deg: float = 0.0  # rotation range in degrees, U(-r, r)
    width_shift: float = 0.0  # fraction of W below 1, pixels from 1 on
    height_shift: float = 0.0  # fraction of H below 1, pixels from 1 on
    shear_deg: float = 0.0  # shear range in degrees (Keras' shear_range)
    zoom: float = 0.0  # Keras' zoom_range: factors ~ U(1 - zoom, 1 + zoom); 0 = off
    horizontal_flip: bool = False
    alternate_flip: bool = False  # with horizontal_flip: a random half flipped in the first pass, then the rest
    brightness: tuple[float, float] | None = None  # (low, high) factors; None = off
    # Keras up to 2.8 (keras_preprocessing 1.1.2): the brightness shift goes through PIL after stretching each image to
    # its own min..max (array_to_img(scale=True)), truncating to uint8 before and after; Keras 2.9 on does not stretch
    brightness_stretch: bool = False
    crop_padding: int = 0  # pixels of padding before the random crop; 0 = off
    crop_mode: CropMode = "reflect"
    cutout: int = 0  # side of the cutout square in pixels; 0 = off
    augmix: int = 0  # AugMix (Hendrycks et al. 2020) at this severity, 1..10 (the paper's: 3); 0 = off

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "width_shift", "height_shift", "shear_deg", "zoom"):
            check_range("AugmentConfig", name, getattr(self, name))
        if self.zoom >= 1:
            raise ValueError(f"AugmentConfig: zoom must be in [0, 1) (factors 1 - zoom .. 1 + zoom), got {self.zoom}")
        for name in ("horizontal_flip", "alternate_flip", "brightness_stretch"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AugmentConfig: {name} must be True or False, got {getattr(self, name)!r}")
        if self.brightness is not None:
            pair = tuple(self.brightness) if isinstance(self.brightness, (tuple, list)) else ()
            if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
                raise ValueError(f"AugmentConfig: brightness must be None or (low, high), got {self.brightness!r}")
            if not (0 <= pair[0] <= pair[1] < math.inf):
                raise ValueError(f"AugmentConfig: brightness needs 0 <= low <= high, got {self.brightness!r}")
            object.__setattr__(self, "brightness", (float(pair[0]), float(pair[1])))  # lists become hashable
        if self.brightness_stretch and self.brightness is None:
            raise ValueError("AugmentConfig: brightness_stretch is part of the brightness shift: set brightness too")
        if isinstance(self.augmix, bool) or not isinstance(self.augmix, int) or not 0 <= self.augmix <= MAX_SEVERITY:
            raise ValueError(f"AugmentConfig: augmix must be 0 (off) or a severity from 1 to {MAX_SEVERITY}, got "
                             f"{self.augmix!r}")  # fmt: skip
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AugmentConfig: {name} must be an int >= 0 (pixels), got {value!r}")
        if self.crop_mode not in CROP_MODES:
            allowed = ", ".join(CROP_MODES)
            raise ValueError(f"AugmentConfig: crop_mode must be one of {allowed}, got {self.crop_mode!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        """Build a config from a mapping (e.g. parsed TOML or JSON), rejecting unknown option names.

        Args:
            d: option names to values; lists become tuples.

        Returns:
            The validated config.

        Raises:
            ValueError: for an unknown option (with the closest names) or a value out of range.
        """
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=2)
                hint = f"; did you mean {', '.join(close)}?" if close else ";"
                raise ValueError(f"unknown augmentation option {key!r}{hint} allowed: {', '.join(allowed)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-friendly dict (tuples become lists); `from_dict` reverses it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def affine(self) -> bool:
        """Whether any of rotation, shift, shear or zoom is on."""
        return bool(self.rotation_deg or self.width_shift or self.height_shift or self.shear_deg or self.zoom)

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on."""
        others = self.horizontal_flip or self.brightness is not None or self.crop_padding or self.cutout or self.augmix
        return self.affine or bool(others)


Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Augmenter:
    """Apply the enabled ops of an `AugmentConfig`: Keras' order (affine, flip, brightness), then crop, AugMix, cutout.

    Example:
        >>> augment = Augmenter(AugmentConfig(crop_padding=4, horizontal_flip=True))
        >>> gen = torch.Generator(device=images.device).manual_seed(0)
        >>> batch = augment(images, gen)  # (B, 3, 32, 32) float in [0, 255]
    """

    def __init__(self, config: AugmentConfig) -> None:
        """Build the op chain once.

        Args:
            config: the options; a mapping is passed through `AugmentConfig.from_dict`.
        """
        if isinstance(config, Mapping):
            config = AugmentConfig.from_dict(config)
        self.config = config
        c = config
        steps: list[Op] = []
        if c.affine:
            zoom = (1.0 - c.zoom, 1.0 + c.zoom)
            ranges = dict(rotation_deg=c.rotation_deg, width_shift=c.width_shift, height_shift=c.height_shift)
            steps.append(lambda x, g: keras_affine(x, g, **ranges, shear_deg=c.shear_deg, zoom=zoom))
        if c.horizontal_flip:
            steps.append(random_flip)
        if c.brightness is not None:
            low, high = c.brightness
            steps.append(lambda x, g: random_brightness(x, g, low, high, stretch=c.brightness_stretch))
        if c.crop_padding:
            steps.append(lambda x, g: random_crop(x, g, c.crop_padding, c.crop_mode))
        if c.augmix:
            steps.append(lambda x, g: augmix(x, g, c.augmix))
        if c.cutout:
            steps.append(lambda x, g: cutout(x, g, c.cutout))
        self._steps = steps

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a (B, C, H, W) float batch in [0, 255]; returns `images` itself when nothing is enabled."""
        for step in self._steps:
            images = step(images, generator)
        return images

    def __repr__(self) -> str:
        return f"Augmenter({self.config!r})"


# The seed notebook's ImageDataGenerator(shear_range=0.5, zoom_range=0.3, horizontal_flip=True,
# brightness_range=(0.9, 1.3), width_shift_range=0.2, rotation_range=30), its brightness shift as Keras up to 2.8 ran it
# (each image stretched to its own min..max first): the seed does not say which Keras it ran, and this reading sits
# closer to its figure (docs/fidelity.md, section 3).
KERAS_SEED_PROYECTO9 = AugmentConfig(
    rotation_deg=30, width_shift=0.2, shear_deg=0.5, zoom=0.3, horizontal_flip=True, brightness=(0.9, 1.3),
    brightness_stretch=True,
)  # fmt: skip
