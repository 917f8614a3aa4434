"""Run configuration: DataConfig, TrainConfig and RunConfig, their validation and their overrides.

Config moves one way: preset -> optional TOML file -> explicit flags -> `RunConfig` -> `Trainer`.
Defaults live only in the dataclass fields below.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cifarlab.data.augment import AugmentConfig
from cifarlab.evaluation.metrics import EVAL_BATCH_SIZE
from cifarlab.options import comma_list, count_or_fraction, option, short_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Normalize = Literal["scale", "standardize"]
Optimizer = Literal["adam", "sgd", "muon"]
Schedule = Literal["constant", "warmup_linear"]
Monitor = Literal["val_loss", "val_accuracy", "loss", "accuracy"]  # Keras' monitor names; the last two: training
BatchNormMode = Literal["frozen", "train"]
Loss = Literal["logits", "keras_probs"]
TestWeights = Literal["checkpoint", "last"]


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and scaled."""

    source: str = option("cifar10", name="--data", short="data", metavar="SOURCE", help="'cifar10' (the default: "
                         "the official archive, downloaded and cached) or an image folder with train/ and test/ "
                         "(optional val/), one subfolder per class")  # fmt: skip
    data_dir: str | None = option(None, metavar="DIR", help="folder already holding cifar-10-python.tar.gz or "
                                  "cifar-10-batches-py/ (nothing is downloaded)")  # fmt: skip
    image_size: int = option(32, metavar="PIXELS", help="side image-folder images are resized to (default 32)")
    # images held out of train for validation, stratified: a count, or a fraction of the train split; 0 = none
    val_size: int | float = option(0.2, metavar="N", parse=count_or_fraction, help="images held out of train "
                                   "for validation, stratified: a count, or a fraction such as 0.2 (the seed's "
                                   "steps: 0.2, i.e. 10000 of CIFAR-10's 50000); 0 = all train")  # fmt: skip
    skip_bad_images: bool = option(False, const=True, help="warn about unreadable images and skip them instead "
                                   "of stopping")  # fmt: skip
    normalize: Normalize = "scale"  # 'scale': x/255 as Keras' rescale; 'standardize': train-split mean/std
    classes: tuple[str, ...] | None = option(None, metavar="NAMES", parse=comma_list, help="comma-separated class "
                                             "names to keep (relabelled in this order)")  # fmt: skip
    per_class_limit: int | None = option(None, metavar="N", help="keep at most N training images per class")

    def __post_init__(self) -> None:
        _check_choice("data.normalize", self.normalize, Normalize)
        if self.image_size < 8:
            raise ValueError(f"--image-size must be at least 8 pixels, got {self.image_size}")
        if isinstance(self.val_size, float) and not 0 < self.val_size < 1:
            raise ValueError(f"--val-size must be a count of images or a fraction between 0 and 1, got {self.val_size}")
        if self.val_size < 0:
            raise ValueError(f"--val-size must be 0 or more, got {self.val_size}")
        if self.per_class_limit is not None and self.per_class_limit < 1:
            raise ValueError(f"--per-class-limit must be at least 1, got {self.per_class_limit}")
        if self.data_dir is not None and self.source != "cifar10":
            raise ValueError(f"--data-dir is where the CIFAR-10 archive is; it does not apply to --data {self.source} "
                             "(drop one of them)")  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe."""

    epochs: int = option(30, metavar="N", help="epochs to train (the preset's by default)")
    batch_size: int = option(128, metavar="N", help="images per optimiser step")
    steps_per_epoch: int | None = None  # batches per epoch drawn from an endless shuffled stream; None = one pass
    optimizer: Optimizer = "adam"
    lr: float = option(1e-3, help="peak learning rate")
    adam_epsilon: float = 1e-7  # Keras' default (PyTorch's own default is 1e-8)
    momentum: float = 0.9  # SGD, and muon's non-filter parameters
    muon_lr: float = 0.24  # muon only: step of the conv filters, relative to their (fixed) norm
    muon_momentum: float = 0.6  # muon only: momentum of the conv filters
    bias_lr_scale: float = 1.0  # SGD and muon: learning rate of 1-D parameters (biases, BatchNorm shifts) / lr
    nesterov: bool = True  # SGD only
    weight_decay: float = 0.0  # L2 added to the gradient (coupled), per step
    schedule: Schedule = "constant"  # 'warmup_linear': linear rise over warmup_epochs, then linear decay to 0
    warmup_epochs: float = 0.0
    label_smoothing: float = option(0.0, metavar="X", help="label smoothing of the cross-entropy, e.g. 0.1 (0: off)")
    loss: Loss = "logits"  # 'keras_probs': from clipped bf16 softmax probabilities, as mixed_bfloat16 Keras
    low_res_size: int = 0  # progressive resizing: side the training images are shrunk to at first; 0 = off
    low_res_epochs: int = 0  # epochs trained at low_res_size before the full size
    whiten_bias_epochs: int = 0  # AirNet: epochs its whitening bias learns, then it is frozen; 0 = always learns
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    checkpoint_best: bool = False  # Keras ModelCheckpoint(monitor='val_accuracy', save_best_only=True)
    # one Keras EarlyStopping per monitor (in this order, after the ModelCheckpoint)
    early_stopping: tuple[Monitor, ...] = option((), name="--no-early-stop", const=(), help="run every epoch "
                                                 "(keeps the best checkpoint)")  # fmt: skip
    patience: int = option(10, metavar="EPOCHS", help="epochs without improvement before early stopping")
    min_delta: float = 0.0  # EarlyStopping: the smallest change of its monitor that counts as an improvement
    restore_best_weights: bool = True  # EarlyStopping puts back its best epoch's weights when it stops (Keras: False)
    # what the final test evaluates: the ModelCheckpoint's best-val_accuracy weights ('checkpoint', when the recipe
    # keeps one), or the weights in memory when training ends ('last': Keras' model.evaluate after model.fit)
    test_weights: TestWeights = "checkpoint"
    eval_batch_size: int = EVAL_BATCH_SIZE
    ema: float = 0.0  # decay of an exponential moving average of the weights, used at the end; 0 = off
    tta: int = 0  # test-time augmentation of the test evaluation: 0 off, 1 mirror, 2 mirror + 1-pixel shifts
    # train by the clock (what `train --budget` sets): this many seconds of training, validation after each epoch
    # included; the learning rate decays to 0 as the time runs out, and `epochs` is the planned count (the
    # progressive-resizing and whitening epochs are counted against it) rather than a limit. None: by epochs
    duration: float | None = None
    test_each_epoch: bool = option(False, const=True, help="also evaluate the test split after every epoch, into "
                                   "history's test_loss and test_accuracy, for analysis only: no callback, "
                                   "checkpoint or early stopping reads them")  # fmt: skip

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, Optimizer)
        _check_choice("train.schedule", self.schedule, Schedule)
        _check_choice("train.loss", self.loss, Loss)
        _check_choice("train.test_weights", self.test_weights, TestWeights)
        for monitor in self.early_stopping:
            _check_choice("train.early_stopping", monitor, Monitor)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"train.steps_per_epoch must be at least 1 or unset, got {self.steps_per_epoch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"train.{spec.name} must be a finite number, got {value}")
        for name in ("muon_lr", "bias_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("momentum", "muon_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.low_res_size < 0 or self.low_res_epochs < 0 or bool(self.low_res_size) != bool(self.low_res_epochs):
            raise ValueError(
                "train.low_res_size and train.low_res_epochs go together: both positive (progressive resizing) or "
                f"both 0, got {self.low_res_size} and {self.low_res_epochs}"
            )
        if self.whiten_bias_epochs < 0:
            raise ValueError(f"train.whiten_bias_epochs must be 0 or more, got {self.whiten_bias_epochs}")
        if self.min_delta < 0:
            raise ValueError(f"train.min_delta must be 0 or more, got {self.min_delta}")
        if self.patience < 1:
            raise ValueError(f"--patience must be at least 1 epoch, got {self.patience}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"train.ema must be in [0, 1), got {self.ema}")
        if self.tta not in (0, 1, 2):
            raise ValueError(f"train.tta must be 0, 1 or 2; got {self.tta}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"train.duration must be a positive number of seconds, got {self.duration}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.loss == "keras_probs" and self.label_smoothing:
            raise ValueError("train.label_smoothing applies to train.loss 'logits' only (Keras' sparse loss has none)")

    def low_res_side(self, image_size: int) -> int | None:
        """The side progressive resizing trains the first epochs at on `image_size` images (None: off, no smaller)."""
        return self.low_res_size if self.low_res_size and self.low_res_size < image_size else None


@dataclass(frozen=True)
class ArchConfig:
    """The network's shape, where its model takes it; None keeps the model's own (the preset's network as built).

    The seed's CNNs (proyecto1..9) take all five; AirNet takes `widths`. A TOML `[arch]` table, and what
    `cifarlab tune` searches over.
    """

    widths: tuple[int, ...] | None = None  # filters of each conv stage (seed's CNNs) or of each group (AirNet, 3)
    convs: int | None = None  # conv layers per stage (seed's CNNs)
    dropout: float | None = None  # Dropout rate after each stage and hidden Dense layer (seed's CNNs); 0 = none
    bn: bool | None = None  # BatchNormalization after each stage and hidden Dense layer (seed's CNNs)
    dense: tuple[int, ...] | None = None  # hidden Dense widths before the output layer (seed's CNNs); () = none

    def __post_init__(self) -> None:
        if self.widths is not None and (not self.widths or any(w < 1 for w in self.widths)):
            raise ValueError(f"arch.widths must be a non-empty list of positive widths, got {list(self.widths)}")
        if self.convs is not None and self.convs < 1:
            raise ValueError(f"arch.convs must be at least 1, got {self.convs}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"arch.dropout must be in [0, 1), got {self.dropout}")
        if self.dense is not None and any(units < 1 for units in self.dense):
            raise ValueError(f"arch.dense widths must be at least 1, got {list(self.dense)}")

    def kwargs(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments for the model's entry point."""
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)
                if getattr(self, spec.name) is not None}  # fmt: skip


@dataclass(frozen=True)
class TransferConfig:
    """Transfer learning: a pretrained backbone under a new head. Off while `backbone` is None."""

    backbone: str | None = option(None, metavar="imagenet|RUN_DIR", help="transfer: the preset model's ImageNet "
                                  "weights (as proyecto10) or a cifarlab run, whose layers up to its classifier get "
                                  "a new head")  # fmt: skip
    weights: str | None = option(None, metavar="PATH", help="local copy of the ImageNet weights "
                                 "(vgg16-397923af.pth); nothing is downloaded")  # fmt: skip
    input_size: int | None = option(None, metavar="PIXELS", help="transfer: resize images (bilinear) to this side "
                                    "before the backbone, e.g. 64, 96, 224")  # fmt: skip
    finetune: int = option(0, metavar="N", help="transfer: also train the backbone's last N blocks (default 0: "
                           "frozen backbone, its features computed once and cached)")  # fmt: skip
    backbone_lr_scale: float = option(0.1, metavar="X", help="transfer: the backbone's learning rate as a fraction "
                                      "of the head's (default 0.1)")  # fmt: skip
    head: tuple[int, ...] = ()  # widths of the new head's hidden Dense layers (ReLU, Dropout); () = one Linear
    head_dropout: float = 0.0  # Dropout after each hidden Dense layer of the new head
    batchnorm: BatchNormMode = "frozen"  # backbone BatchNorm while fine-tuning: running statistics 'frozen' or 'train'

    def __post_init__(self) -> None:
        _check_choice("transfer.batchnorm", self.batchnorm, BatchNormMode)
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"--input-size must be at least 8 pixels, got {self.input_size}")
        if self.finetune < 0:
            raise ValueError(f"--finetune must be 0 (frozen backbone) or more blocks, got {self.finetune}")
        if not self.backbone_lr_scale > 0:
            raise ValueError(f"--backbone-lr-scale must be positive, got {self.backbone_lr_scale}")
        if any(units < 1 for units in self.head):
            raise ValueError(f"transfer.head widths must be at least 1, got {list(self.head)}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"transfer.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.weights is not None and self.backbone != "imagenet":
            raise ValueError("--weights (a local ImageNet weights file) needs --backbone imagenet, as in proyecto10")
        if self.backbone is None and (self.finetune or self.input_size is not None or self.head):
            raise ValueError("--finetune, --input-size and transfer.head apply to transfer runs: add --backbone")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs: the preset it came from, data, model, recipe and machine settings."""

    preset: str = "proyecto4"
    model: str = "proyecto4"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    device: Literal["auto", "cpu", "cuda"] = option("auto", group="machine", help="auto: CUDA when present "
                                                    "(default)")  # fmt: skip
    precision: Literal["auto", "bf16", "fp32"] = option("auto", group="machine", help="auto: bf16 autocast on CUDA "
                                                        "and on CPUs with AMX/AVX512-BF16, else fp32")  # fmt: skip
    channels_last: bool = option(True, name="--no-channels-last", const=False, group="machine",
                                 help="keep NCHW memory format")  # fmt: skip
    compile: bool = option(False, const=True, group="machine", help="torch.compile the model")
    # distributed runs: synchronise BatchNorm statistics over the ranks (CUDA); off = per rank
    sync_bn: bool = option(False, const=True, group="distributed", help="distributed on CUDA: BatchNorm "
                           "statistics over all ranks (default: per rank)")  # fmt: skip
    save_every_steps: int = option(0, metavar="N", group="machine", help="also write resume.pt every N steps "
                                   "inside an epoch, so a resume continues mid-epoch (default: at epoch "
                                   "ends)")  # fmt: skip
    seed: int = option(0, metavar="N", group="output", help="seed of the split, initialisation, shuffling and "
                       "augmentation")  # fmt: skip
    out: str | None = option(None, metavar="DIR", group="output", help="run directory (default "
                             "runs/<preset>-<timestamp>)")  # fmt: skip
    quiet: bool = option(False, const=True, group="output", help="no progress bars or per-epoch lines")

    def __post_init__(self) -> None:
        _check_choice("--device", self.device, Literal["auto", "cpu", "cuda"])
        _check_choice("--precision", self.precision, Literal["auto", "bf16", "fp32"])
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")
        if self.save_every_steps < 0:
            raise ValueError(f"--save-every-steps must be 0 (off) or more steps, got {self.save_every_steps}")
        if self.transfer.backbone is not None and self.arch.kwargs():
            raise ValueError("[arch] options shape the preset's own network; a transfer run's is its backbone and "
                             "transfer.head")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-friendly values."""
        return dataclasses.asdict(self)

    def dotted(self) -> dict[str, Any]:
        """Every setting by its dotted key ('train.epochs': 10, 'seed': 0), as TOML files and overrides name them."""
        return _dotted(self.to_dict())


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _check_choice(name: str, value: object, choices: Any) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "transfer": TransferConfig, "arch": ArchConfig}
SHORT_KEYS = short_keys(RunConfig)  # 'epochs' -> 'train.epochs', 'data' -> 'data.source', ...


_AUGMENT = "train.augment"


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return `config` with `overrides` applied; keys are 'field', 'data.field' or 'train.field'.

    Values that are None are skipped, so unset CLI flags never hide preset defaults. Nested dicts
    (as read from TOML: {'train': {'epochs': 5}}) are accepted too. The augmentation is changed key by key, over the
    preset's: `{'train': {'augment': {'augmix': 3}}}` or 'train.augment.augmix' keeps the preset's flips and crops.

    Raises:
        ValueError: for an unknown key (with the closest names) or an invalid value.
    """
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and key in _SECTIONS:
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        elif key in _SECTIONS and value is not None:
            raise ValueError(f"config key '{key}' is a section: give a [{key}] table of its keys, got {value!r}")
        else:
            flat[key] = value
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    augment: dict[str, Any] = {}  # 'train.augment.cutout' keys, and [train.augment] tables: merged over the preset's
    for key, value in list(flat.items()):
        if key.startswith(f"{_AUGMENT}.") and value is not None:
            augment[key.removeprefix(f"{_AUGMENT}.")] = flat.pop(key)
        elif key == _AUGMENT and isinstance(value, dict):
            augment.update(flat.pop(key))
    if augment:
        flat[_AUGMENT] = {**config.train.augment.to_dict(), **augment}
    for key, value in flat.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        cls = _SECTIONS.get(section) if section else RunConfig
        if cls is None:
            raise ValueError(f"unknown config section {section!r} in {key!r}; allowed: {', '.join(_SECTIONS)}")
        names = [f.name for f in dataclasses.fields(cls) if not (cls is RunConfig and f.name in _SECTIONS)]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            if not section:  # a section's key at the top level: say where it belongs
                close += [f"[{sub}] {name}" for sub, sub_cls in _SECTIONS.items() if name in _field_types(sub_cls)]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint} (allowed: {', '.join(names)})")
        value = _check_type(key, value, _field_types(cls)[name])
        (nested[section] if section else top)[name] = value
    for section, values in nested.items():
        if values:
            top[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **top)


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a config dataclass."""
    return typing.get_type_hints(cls)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """`value` as a field of type `hint` holds it (ints widen to floats, lists become tuples), or ValueError.

    Literal choices are left to `__post_init__`, which names the allowed values.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_type(key, value, option)
            except ValueError:
                pass
        raise ValueError(f"{key} must be {_describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key} must be {_describe(hint)}, got {value!r}")
        return tuple(_check_type(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value))
    if hint is AugmentConfig:
        if isinstance(value, AugmentConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be {_describe(hint)}, got {value!r}")
        return AugmentConfig.from_dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint, True)
    if not ok:
        raise ValueError(f"{key} must be {_describe(hint)}, got {value!r}")
    return hint(value) if hint in (int, float) else value


def _describe(hint: Any) -> str:
    """A field type in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple and typing.get_origin(args[0]) is typing.Literal:
        return "a list of values from " + ", ".join(map(str, typing.get_args(args[0])))
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", AugmentConfig: "a table"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a run config TOML file (top-level keys, [data], [train], [transfer] and [arch] tables).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (--config)")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved with `RunConfig.to_dict()` (e.g. from a run's config.json)."""
    return apply_overrides(RunConfig(), data)
