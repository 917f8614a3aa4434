"""Named presets: a model plus the recipe that trains it, starting with the seed's ten steps."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cifarlab.config import ArchConfig, DataConfig, RunConfig, TrainConfig, TransferConfig
from cifarlab.data.augment import KERAS_SEED_PROYECTO9, AugmentConfig
from cifarlab.evaluation.tta import WORDS as tta_words
from cifarlab.models.registry import unknown_name_message

DEFAULT_PRESET = "fast94"  # `cifarlab train` with no --preset: the best fast recipe


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


def register_preset_as(name: str) -> Callable[[Callable[[], Preset]], Callable[[], Preset]]:
    """Register a preset factory under `name`, for names that are not identifiers (e.g. 'vgg16-finetune')."""

    def register(fn: Callable[[], Preset]) -> Callable[[], Preset]:
        if name in _PRESETS:
            raise ValueError(f"preset '{name}' is registered twice")
        _PRESETS[name] = fn
        return fn

    return register


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
# The seed's callbacks=[callback_modelcheckpoint, callback_loss, callback_accuracy], read as Keras documents them
# (docs/fidelity.md §3: of every reading replayed over five full-length rows, this one sits closest to the seed).
_SEED_CALLBACKS = {
    "checkpoint_best": True,
    "early_stopping": ("loss", "accuracy"),
    "patience": 3,
    "restore_best_weights": False,
    "test_weights": "last",
}
_ADAM_CHOICE = "optimizer not stated in the seed: Keras' 'adam' default, Adam(lr=0.001, epsilon=1e-7)"
_PATIENCE_CHOICE = (
    "the seed's callback_modelcheckpoint/callback_loss/callback_accuracy are not shown: read as Keras documents "
    "them, ModelCheckpoint(val_accuracy, save_best_only) and EarlyStopping(monitor='loss', patience=3) and "
    "(monitor='accuracy', patience=3) on the training metrics, best weights not restored; the last epoch's "
    "weights are tested, as the seed's model.evaluate after fit (docs/fidelity.md §3 measures every reading)"
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
    config = RunConfig(preset=name, model=model, data=DataConfig(val_size=0.2, normalize="scale"), train=recipe)
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
            "brightness 0.9-1.3 (before /255, clipped; each image first stretched to its own min..max, as Keras up "
            "to 2.8 did), fill 'nearest'; validation on the whole val split "
            "(the seed's 78 steps x 128 = 9,984 of its 10,000 images)",
        ),
    )  # fmt: skip


_P10_CHOICES = (
    "backbone: the published PyTorch ImageNet VGG16 (vgg16-397923af.pth; the same 13 convolutions and 14,714,688 "
    "parameters as Keras' VGG16(include_top=False), from another training), downloaded once and hash-checked, or "
    "--weights PATH offline",
    "preprocessing follows the weights: RGB in [0, 1] normalised with the ImageNet mean/std (data.normalize is not "
    "used). Keras' VGG16 expects preprocess_input's BGR minus the mean pixel on 0-255 values; the seed does not show "
    "which it fed, and plain x/255, its other steps' input, would have degraded the features",
    "features: computed once by the frozen backbone in inference mode and cached on disk (the seed's "
    "x_train_postvgg16); at 32x32 the last pooling leaves 1x1x512, so the global average pooling here is the "
    "seed's Flatten",
    "one-hot labels + categorical_crossentropy = cross-entropy on class indices; the head's Dense layers have Keras' "
    "glorot-uniform kernels and zero biases",
    "validation data (the seed's x_val_postvgg16): the same stratified 10,000-image split as the other steps",
    _ADAM_CHOICE,
    _NO_CALLBACKS,
)


@register_preset
def proyecto10() -> Preset:
    """PROYECTO 10: ImageNet VGG16 features (frozen, cached) and a Dense 1024-1024-512 head."""
    config = RunConfig(
        preset="proyecto10",
        model="vgg16",
        data=DataConfig(val_size=0.2),  # 10000 of CIFAR-10's 50000
        train=replace(_SEED_TRAIN, epochs=100, batch_size=64),
        transfer=TransferConfig(backbone="imagenet", head=(1024, 1024, 512), head_dropout=0.5),
    )
    summary = "ImageNet VGG16 frozen at 32x32 (features cached) + Dense 1024-1024-512, Dropout 0.5; batch 64"
    return Preset("proyecto10", summary, config, seed_accuracy=61.79, choices=_P10_CHOICES)


@register_preset_as("vgg16-finetune")
def vgg16_finetune() -> Preset:
    """Transfer done well: the whole ImageNet VGG16 fine-tuned on upsampled, augmented images."""
    recipe = TrainConfig(
        epochs=10,
        batch_size=64,
        optimizer="sgd",
        lr=0.01,  # the new head's; the backbone gets lr * backbone_lr_scale = 0.001
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,  # VGG's own ImageNet value
        schedule="warmup_linear",
        warmup_epochs=1.0,  # the random head's first gradients would otherwise shake the pretrained filters
        label_smoothing=0.1,
        augment=AugmentConfig(horizontal_flip=True, crop_padding=4, crop_mode="reflect"),
        checkpoint_best=True,
        eval_batch_size=100,  # 224x224 activations: 100 images per batch is ~1 GB per VGG layer in fp32
    )
    config = RunConfig(
        preset="vgg16-finetune",
        model="vgg16",
        data=DataConfig(val_size=0.1),  # 5000 of CIFAR-10's 50000
        train=recipe,
        transfer=TransferConfig(backbone="imagenet", input_size=224, finetune=5, backbone_lr_scale=0.1),
    )
    choices = (
        "images upsampled (bilinear) to 224x224, the scale ImageNet objects had when the filters were learnt; at "
        "32x32 a CIFAR object is a few pixels wide at the third block and the frozen features stay weak (the seed's "
        "61.79 %)",
        "all 5 blocks fine-tuned at 0.1x the head's learning rate; VGG16 has no BatchNorm, so nothing to freeze there",
        "flip + 4-pixel reflect-padded random crop at 32x32, before the upsampling; label smoothing 0.1",
        "SGD Nesterov momentum 0.9, weight decay 5e-4, 1 warmup epoch then linear decay, 10 epochs, batch 64; the "
        "best-val_accuracy epoch (5,000 held-out images) is kept",
        "expected test accuracy about 92 % with the ImageNet weights (not measured here: no weights offline, and a "
        "GPU job: ~46 GFLOP per training image); reported for VGG16 fine-tuned on CIFAR-10: 92.3 % (Enhancing Image "
        "Classification Accuracy Using Transfer Learning with Pretrained CNNs, DMP-LNCSE, article 164)",
    )
    summary = "ImageNet VGG16 fine-tuned at 224x224 (all blocks, backbone lr x0.1), flip + crop; 10 epochs, GPU"
    return Preset("vgg16-finetune", summary, config, choices=choices)


# The fast recipes: learnt from the public CIFAR-10 speed-runs (Page 2018; Jordan 2024), written for cifarlab.
CALIBRATION_SHARE = 0.05  # fast94 over 3 seeds: test ECE 1.00-1.55 % after the temperature, -0.19 points of accuracy
_FAST_AUGMENT = AugmentConfig(horizontal_flip=True, alternate_flip=True, crop_padding=2, crop_mode="reflect")


def _fast_choices(*, lr: float, muon_lr: float, batch_size: int, label_smoothing: float, tta: int) -> tuple[str, ...]:
    return (
        f"Muon on the conv filters (orthogonalised Nesterov momentum 0.6, step {muon_lr:g} of the filters' fixed "
        f"norm); Nesterov SGD (momentum 0.9, lr {lr:g}, weight decay 5e-4) on the head, with 4x that lr on the "
        f"BatchNorm shifts and the whitening bias; batch {batch_size}; half an epoch of linear warmup, then a "
        "linear decay to 0",
        f"label smoothing {label_smoothing:g}",
        "5 % of the training images held out (--val-size 0.05, 2,500 of CIFAR-10's 50,000) for one purpose: the "
        "temperature that calibrates the shipped probabilities (no model selection; test accuracy is reported once, "
        "at the end); --val-size 0 trains on all of them and ships uncalibrated probabilities",
        f"alternating flip (each image mirrored in every other epoch) + 2-pixel reflect-padded random crop; "
        f"{tta_words[tta]}",
        "whitening first conv set from the training images' 2x2 patch covariance; BatchNorm with a fixed scale",
    )


def _fast(
    name: str,
    model: str,
    summary: str,
    *,
    epochs: int,
    low_res_epochs: int = 0,
    low_res_size: int = 24,
    whiten_bias_epochs: int = 0,
    widths: tuple[int, int, int] | None = None,
    batch_size: int = 1000,
    tta: int = 2,
    label_smoothing: float = 0.2,
    lr: float = 0.4,
    muon_lr: float = 0.24,
) -> Preset:
    recipe = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="muon",
        muon_lr=muon_lr,
        muon_momentum=0.6,
        lr=lr,
        momentum=0.9,
        nesterov=True,
        bias_lr_scale=4.0,
        weight_decay=5e-4,
        schedule="warmup_linear",
        warmup_epochs=0.5,
        label_smoothing=label_smoothing,
        low_res_size=low_res_size if low_res_epochs else 0,
        low_res_epochs=low_res_epochs,
        whiten_bias_epochs=whiten_bias_epochs,
        augment=_FAST_AUGMENT,
        tta=tta,
    )
    config = RunConfig(preset=name, model=model, data=DataConfig(val_size=CALIBRATION_SHARE, normalize="standardize"),
                       train=recipe, arch=ArchConfig(widths=widths))  # fmt: skip
    choices = _fast_choices(lr=lr, muon_lr=muon_lr, batch_size=batch_size, label_smoothing=label_smoothing, tta=tta)
    return Preset(name=name, summary=summary, config=config, choices=choices)


@register_preset
def fast88() -> Preset:
    """The shortest run that beats the seed's best step."""
    return _fast("fast88", "airnet94", "AirNet 64/256/256, 5 epochs (2 at 24px), TTA: the seed's best in minutes",
                 epochs=5, low_res_epochs=2, whiten_bias_epochs=2)  # fmt: skip


@register_preset
def fast94() -> Preset:
    """The speed-run width and schedule length; aimed at 94 % on the official CIFAR-10."""
    return _fast("fast94", "airnet94", "AirNet 64/256/256, 10 epochs (4 at 24px), TTA",
                 epochs=10, low_res_epochs=4)  # fmt: skip


@register_preset
def fast96() -> Preset:
    """A wider AirNet and a longer schedule (not measured yet)."""
    return _fast("fast96", "airnet96", "wide AirNet 128/384/384, 30 epochs (10 at 24px), TTA",
                 epochs=30, low_res_epochs=10)  # fmt: skip


# Points of the measured accuracy-cost front (issue 35: benchmarks/frontier, BENCHMARKS.md), named by what they are.
# air32-6ep, air32-13ep and air48-13ep are the most accurate that two Zen 4 cores, the slowest CPU seen, run in 3, 7
# and 15 minutes of command time with 5 % to spare (ZEN4_BUDGETS; measured there, benchmarks/presets/times.jsonl);
# air32-9ep, the next point up from air32-6ep, takes 3.1. Their learning rates and label smoothing are the study's,
# to three or four significant digits (within 0.2 %).
FRONT_PRESETS = {"air32-6ep": "trial 23", "air32-9ep": "trial 13", "air32-13ep": "trial 27", "air48-13ep": "trial 51"}
ZEN4_BUDGETS = {3: "air32-6ep", 7: "air32-13ep", 15: "air48-13ep"}  # minutes -> preset


@register_preset_as("air32-6ep")
def air32_6ep() -> Preset:
    """The front's best in 3 minutes on two Zen 4 cores."""
    return _fast("air32-6ep", "airnet94",
                 "AirNet 32/128/128, 6 epochs (5 at 24px), batch 500, no TTA: ~2.7 min on Zen 4",
                 epochs=6, low_res_epochs=5, low_res_size=24, widths=(32, 128, 128), batch_size=500, tta=0,
                 label_smoothing=0.0706, lr=0.627, muon_lr=0.1605)  # fmt: skip


@register_preset_as("air32-9ep")
def air32_9ep() -> Preset:
    """The front's next point up from air32-6ep: 3.1 minutes on two Zen 4 cores."""
    return _fast("air32-9ep", "airnet94",
                 "AirNet 32/128/128, 9 epochs (6 at 16px), batch 500, no TTA: ~3.1 min on Zen 4",
                 epochs=9, low_res_epochs=6, low_res_size=16, widths=(32, 128, 128), batch_size=500, tta=0,
                 label_smoothing=0.0872, lr=0.566, muon_lr=0.123)  # fmt: skip


@register_preset_as("air32-13ep")
def air32_13ep() -> Preset:
    """The front's best in 7 minutes on two Zen 4 cores."""
    return _fast("air32-13ep", "airnet94",
                 "AirNet 32/128/128, 13 epochs (5 at 16px), batch 1500, mirror TTA: ~6.4 min on Zen 4",
                 epochs=13, low_res_epochs=5, low_res_size=16, widths=(32, 128, 128), batch_size=1500, tta=1,
                 label_smoothing=0.0437, lr=0.251, muon_lr=0.192)  # fmt: skip


@register_preset_as("air48-13ep")
def air48_13ep() -> Preset:
    """The front's best in 15 minutes on two Zen 4 cores."""
    return _fast("air48-13ep", "airnet94", "AirNet 48/192/192, 13 epochs (6 at 20px), TTA: ~12 min on Zen 4",
                 epochs=13, low_res_epochs=6, low_res_size=20, widths=(48, 192, 192), tta=2,
                 label_smoothing=0.0663, lr=0.487, muon_lr=0.324)  # fmt: skip
