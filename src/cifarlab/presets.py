"""Named presets: a model plus the recipe that trains it, starting with the seed's ten steps."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cifarlab.config import DataConfig, RunConfig, TrainConfig
from cifarlab.data.augment import KERAS_SEED_PROYECTO9, AugmentConfig
from cifarlab.models.registry import unknown_name_message

DEFAULT_PRESET = "proyecto4"


@dataclass(frozen=True)
class Preset:
    """A named, documented run configuration.

    Attributes:
        name: the preset's name (`--preset`).
        summary: one line for `cifarlab presets`.
        config: the resolved run configuration it stands for.
        seed_accuracy: the test accuracy (percent) the seed reported for this step, if it is one of them.
        choices: where the source is silent, what was chosen and why (`cifarlab presets --details`).
    """

    name: str
    summary: str
    config: RunConfig
    seed_accuracy: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)


_PRESETS: dict[str, Callable[[], Preset]] = {}


def register_preset(fn: Callable[[], Preset]) -> Callable[[], Preset]:
    """Register a preset factory under its function name (a duplicate name is an error)."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"preset '{fn.__name__}' is registered twice")
    _PRESETS[fn.__name__] = fn
    return fn


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the presets matching a shell-style pattern, in registration order."""
    return [name for name in _PRESETS if fnmatch.fnmatchcase(name, pattern)]


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        KeyError: for an unknown name, with the closest matches.
    """
    if name not in _PRESETS:
        raise KeyError(unknown_name_message("preset", name, list(_PRESETS), "presets"))
    return _PRESETS[name]()


# What every seed step shares: Keras' Adam(lr=0.001, epsilon=1e-7), x/255 inputs, 40k/10k train/val split.
_SEED_TRAIN = TrainConfig(optimizer="adam", lr=1e-3, adam_epsilon=1e-7)
_SEED_CALLBACKS = {"checkpoint_best": True, "early_stopping": ("val_loss", "val_accuracy"), "patience": 10}
_ADAM_CHOICE = "optimizer not stated in the seed: Keras' 'adam' default, Adam(lr=0.001, epsilon=1e-7)"
_PATIENCE_CHOICE = (
    "the seed's callback_modelcheckpoint/callback_loss/callback_accuracy are not shown: read as "
    "ModelCheckpoint(val_accuracy, save_best_only) and EarlyStopping on val_loss and on val_accuracy, "
    "patience 10 epochs, restore_best_weights; test accuracy is measured on the best-val_accuracy weights"
)
_NO_CALLBACKS = "no callbacks, as in the seed: every epoch runs and the last weights are tested"


def _seed_step(
    name: str,
    model: str,
    summary: str,
    accuracy: float,
    *,
    epochs: int,
    batch_size: int,
    callbacks: bool,
    extra_choices: tuple[str, ...] = (),
    **train: object,
) -> Preset:
    recipe = replace(_SEED_TRAIN, epochs=epochs, batch_size=batch_size, **(_SEED_CALLBACKS if callbacks else {}))
    recipe = replace(recipe, **train)
    choices = (_PATIENCE_CHOICE if callbacks else _NO_CALLBACKS,) + extra_choices
    config = RunConfig(preset=name, model=model, data=DataConfig(val_size=10_000, normalize="scale"), train=recipe)
    return Preset(name=name, summary=summary, config=config, seed_accuracy=accuracy, choices=choices)


@register_preset
def proyecto1() -> Preset:
    """PROYECTO 1."""
    return _seed_step(
        "proyecto1", "proyecto1", "Conv32-Pool-Conv64-Pool-Dense64; 200 epochs, batch 512", 65.74,
        epochs=200, batch_size=512, callbacks=False, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto2() -> Preset:
    """PROYECTO 2."""
    return _seed_step(
        "proyecto2", "proyecto2", "3x(2 conv + pool) 32/64/128, Dense128; 200 epochs, batch 512, callbacks", 72.86,
        epochs=200, batch_size=512, callbacks=True, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto3() -> Preset:
    """PROYECTO 3."""
    return _seed_step(
        "proyecto3", "proyecto3", "P2 + Dropout 0.3, 2x Dense128; as P2", 77.54,
        epochs=200, batch_size=512, callbacks=True, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto4() -> Preset:
    """PROYECTO 4."""
    return _seed_step(
        "proyecto4", "proyecto4", "P3 + BatchNormalization, Dense128; 100 epochs, batch 128", 83.32,
        epochs=100, batch_size=128, callbacks=False, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto5() -> Preset:
    """PROYECTO 5."""
    return _seed_step(
        "proyecto5", "proyecto5", "P4 with Dense256; 100 epochs, batch 128, callbacks", 83.36,
        epochs=100, batch_size=128, callbacks=True, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto6() -> Preset:
    """PROYECTO 6."""
    return _seed_step(
        "proyecto6", "proyecto6", "filters 64/128/256, Dense512; as P5", 83.39,
        epochs=100, batch_size=128, callbacks=True,
        extra_choices=(_ADAM_CHOICE, "the seed's listing stops before Dense(10, softmax): added, as in the others"),
    )  # fmt: skip


@register_preset
def proyecto7() -> Preset:
    """PROYECTO 7."""
    return _seed_step(
        "proyecto7", "proyecto7", "filters 128/256/512, Dropout 0.5, Dense512; as P5", 85.95,
        epochs=100, batch_size=128, callbacks=True, extra_choices=(_ADAM_CHOICE,),
    )  # fmt: skip


@register_preset
def proyecto8() -> Preset:
    """PROYECTO 8."""
    return _seed_step(
        "proyecto8", "proyecto7", "P7 with Adam(learning_rate=0.001) stated explicitly", 87.15,
        epochs=100, batch_size=128, callbacks=True,
    )  # fmt: skip


@register_preset
def proyecto9() -> Preset:
    """PROYECTO 9."""
    return _seed_step(
        "proyecto9", "proyecto6", "P6 net + ImageDataGenerator augmentation; batch 256, 156 steps/epoch", 88.37,
        epochs=100, batch_size=256, callbacks=True, steps_per_epoch=156, augment=KERAS_SEED_PROYECTO9,
        extra_choices=(
            _ADAM_CHOICE,
            "augmentation: rotation 30 deg, width shift 0.2, shear 0.5 deg, zoom 0.3, horizontal flip, "
            "brightness 0.9-1.3 (before /255, clipped), fill 'nearest'; validation on the whole val split "
            "(the seed's 78 steps x 128 = 9,984 of its 10,000 images)",
        ),
    )  # fmt: skip


# The fast recipes: learnt from the public CIFAR-10 speed-runs (Page 2018; Jordan 2024), written for cifarlab.
_FAST_AUGMENT = AugmentConfig(horizontal_flip=True, crop_padding=2, crop_mode="reflect")
_FAST_CHOICES = (
    "SGD with Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.2, a linear warmup then a linear "
    "decay to 0 (Page's DAWNBench recipe, scaled to the batch size)",
    "all 50,000 training images (--val-size 0): test accuracy is reported once, at the end, with no model "
    "selection on the test set",
    "flip + 2-pixel reflect-padded random crop; test-time augmentation with the mirror and 1-pixel shifts",
    "whitening first conv set from the training images' 2x2 patch covariance; BatchNorm with a fixed scale",
)


def _fast(name: str, model: str, summary: str, *, epochs: int, batch_size: int, lr: float, warmup: float) -> Preset:
    recipe = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="warmup_linear",
        warmup_epochs=warmup,
        label_smoothing=0.2,
        augment=_FAST_AUGMENT,
        tta=2,
    )
    config = RunConfig(preset=name, model=model, data=DataConfig(val_size=0, normalize="standardize"), train=recipe)
    return Preset(name=name, summary=summary, config=config, choices=_FAST_CHOICES)


@register_preset
def fast88() -> Preset:
    """The shortest run that beats the seed's best step."""
    return _fast("fast88", "airnet88", "narrow AirNet, 5 epochs: the seed's best in a coffee break",
                 epochs=5, batch_size=512, lr=0.4, warmup=1.0)  # fmt: skip


@register_preset
def fast94() -> Preset:
    """The speed-run width, a short schedule."""
    return _fast("fast94", "airnet94", "AirNet 64/256/256, 10 epochs, TTA",
                 epochs=10, batch_size=512, lr=0.4, warmup=2.0)  # fmt: skip


@register_preset
def fast96() -> Preset:
    """A wider AirNet and a longer schedule."""
    return _fast("fast96", "airnet96", "wide AirNet 128/384/384, 30 epochs, TTA",
                 epochs=30, batch_size=512, lr=0.4, warmup=5.0)  # fmt: skip
