"""What `cifarlab tune` searches over: the built-in spaces and the TOML files that narrow or change them.

A space maps parameter names to distributions. Two are built in: the seed family's (the choices the seed's ten
steps made by hand: widths, convs per stage, Dropout, BatchNorm, Dense units, lr, batch size, augmentation) and
the fast recipes' (lr, Muon lr, weight decay, label smoothing, widths, batch size, epochs, low-resolution epochs
and side, test-time augmentation: what `--frontier` trades against cost). A TOML file
replaces a parameter's distribution (`lr = {low = 1e-4, high = 1e-2, log = true}`, `batch_size = [64, 128]`) or
fixes it (`bn = true`). `config_overrides` turns one sampled point into run-config overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.config import RunConfig, load_toml


@dataclass(frozen=True)
class Param:
    """One searched parameter: a float or int range (optionally log-scaled), or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"{self.name}: an empty list of choices")
            return
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"{self.name}: a range needs finite low and high, got {self.low} and {self.high}")
        if not self.low < self.high:
            raise ValueError(f"{self.name}: an empty range (low {self.low} is not below high {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log range needs low > 0, got {self.low}")

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        """The distribution in a few words, for tables and reports."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices)) if len(self.choices) > 1 else f"= {self.choices[0]}"
        kind = "integers" if self.integer else "log-uniform" if self.log else "uniform"
        return f"{kind} in [{self.low:g}, {self.high:g}]"


Space = dict[str, Param]

SEED_SPACE: Space = {
    "lr": Param("lr", 1e-4, 1e-2, log=True),
    "batch_size": Param("batch_size", choices=(64, 128, 256)),
    "base_width": Param("base_width", choices=(16, 32, 64)),  # filters of the first stage; each next one doubles
    "stages": Param("stages", choices=(2, 3)),
    "convs": Param("convs", 1, 3, integer=True),
    "dropout": Param("dropout", 0.0, 0.5),
    "bn": Param("bn", choices=(True, False)),
    "dense": Param("dense", choices=(64, 128, 256, 512)),  # one hidden Dense layer of this width
    "shift": Param("shift", 0.0, 0.2),  # ImageDataGenerator width_shift_range and height_shift_range
    "rotation": Param("rotation", 0.0, 20.0),  # rotation_range in degrees
    "flip": Param("flip", choices=(True, False)),  # horizontal_flip
}

FAST_SPACE: Space = {
    "lr": Param("lr", 0.1, 1.0, log=True),  # Nesterov SGD on the head and the BatchNorm shifts
    "muon_lr": Param("muon_lr", 0.08, 0.5, log=True),
    "weight_decay": Param("weight_decay", 1e-4, 2e-3, log=True),
    "label_smoothing": Param("label_smoothing", 0.0, 0.3),
    "base_width": Param("base_width", choices=(32, 64, 96)),  # AirNet's first group; the other two are 4x
    "batch_size": Param("batch_size", choices=(500, 1000, 1500)),
    "epochs": Param("epochs", 4, 16, integer=True),
    "low_res_epochs": Param("low_res_epochs", 0, 6, integer=True),  # at most epochs - 1
    "low_res_size": Param("low_res_size", choices=(16, 20, 24)),  # side of the low-resolution epochs, in pixels
    "tta": Param("tta", choices=(0, 1, 2)),  # test-time augmentation views: 1, 2 (mirror) or 6 (+ 1-pixel shifts)
}

SPACES = {"seed": SEED_SPACE, "fast": FAST_SPACE}


def family_of(config: RunConfig) -> str:
    """The built-in space a config's model belongs to: 'seed' (the Keras CNNs) or 'fast' (AirNet).

    Raises:
        ValueError: for a model neither space fits (a transfer run, say).
    """
    if config.transfer.backbone is not None:
        raise ValueError("cifarlab tune searches the seed's CNNs and the fast recipes; not transfer runs")
    if config.model.startswith("proyecto"):
        return "seed"
    if config.model.startswith("airnet"):
        return "fast"
    raise ValueError(f"no built-in search space for model {config.model!r} (the seed's CNNs and AirNet have one)")


def load_space(family: str, path: str | Path | None = None) -> Space:
    """The built-in space of `family`, changed by the TOML file at `path` when given.

    In the file each key names a parameter of the space: a table `{low, high, log}` sets a range (integers when
    low and high both are), a list sets the choices, a single value fixes the parameter.

    Raises:
        ValueError: for an unknown parameter (with the closest names), an empty range or list, or a bad value.
        FileNotFoundError: if the file is missing.
    """
    space = dict(SPACES[family])
    if path is None:
        return space
    where = f"--space {path}"
    for name, value in load_toml(path).items():
        if name not in space:
            close = difflib.get_close_matches(name, list(space), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{where}: unknown parameter {name!r}{hint} (the {family} space has: {', '.join(space)})")
        try:
            space[name] = _param(name, value, space[name])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return space


def cap_epochs(space: Space, cap: int | None) -> Space:
    """The space as sampled under `--epochs cap`: no epoch count above the cap, no low-res epochs at or beyond it.

    Values a capped trial would never train (a sampled 12 epochs run as 5) are not drawn, so the sampler does not
    spend its trials on a dimension that changes nothing and the report shows what ran.
    """
    if cap is None:
        return space
    space = dict(space)
    for name, most in (("epochs", cap), ("low_res_epochs", cap - 1)):
        param = space.get(name)
        if param is None:
            continue
        if param.choices is not None:
            kept = (min(value, most) if isinstance(value, int) else value for value in param.choices)
            space[name] = Param(name, choices=tuple(dict.fromkeys(kept)))
        elif param.high is not None and param.high > most:
            low = min(param.low, most)
            space[name] = (Param(name, low, most, log=param.log, integer=param.integer) if low < most
                           else Param(name, choices=(int(most) if param.integer else float(most),)))  # fmt: skip
    return space


def _param(name: str, value: Any, built_in: Param) -> Param:
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(value):
            raise ValueError(f"{name}: a range is a table of low, high and optionally log; got keys {sorted(value)}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError(f"{name}: low and high must be numbers, got {low!r} and {high!r}")
        integer = isinstance(low, int) and isinstance(high, int) and (built_in.integer or built_in.choices is not None)
        return Param(name, low, high, log=bool(value.get("log", False)), integer=integer)
    if isinstance(value, list):
        return Param(name, choices=tuple(value))
    return Param(name, choices=(value,))


def config_overrides(values: dict[str, Any], base: RunConfig) -> dict[str, Any]:
    """Run-config overrides (dotted keys) for one point of a space, applied over `base`, the searched preset's."""
    values = dict(values)
    overrides: dict[str, Any] = {}
    arch: dict[str, Any] = {}
    if "base_width" in values:
        width = int(values.pop("base_width"))
        if base.model.startswith("airnet"):
            arch["widths"] = (width, 4 * width, 4 * width)
        else:
            stages = int(values.pop("stages", len(base.arch.widths or ()) or 3))
            arch["widths"] = tuple(width * 2**i for i in range(stages))
    for key in ("convs", "dropout", "bn"):
        if key in values:
            arch[key] = values.pop(key)
    if "dense" in values:
        arch["dense"] = (int(values.pop("dense")),)
    values.pop("stages", None)
    augment = {}
    if "shift" in values:
        augment["width_shift"] = augment["height_shift"] = float(values.pop("shift"))
    if "rotation" in values:
        augment["rotation_deg"] = float(values.pop("rotation"))
    if "flip" in values:
        augment["horizontal_flip"] = bool(values.pop("flip"))
    if augment:
        overrides["train.augment"] = dataclasses.replace(base.train.augment, **augment)
    epochs = int(values.pop("epochs", base.train.epochs))
    low_res_size = values.pop("low_res_size", None)
    if "low_res_epochs" in values or low_res_size is not None:
        low_res = min(int(values.pop("low_res_epochs", base.train.low_res_epochs)), epochs - 1)
        size = int(low_res_size) if low_res_size is not None else base.train.low_res_size or 24
        overrides["train.low_res_epochs"] = low_res
        overrides["train.low_res_size"] = size if low_res else 0
    if epochs != base.train.epochs:
        overrides["train.epochs"] = epochs
    batch = values.get("batch_size")
    if batch is not None and base.train.steps_per_epoch is not None and int(batch) != base.train.batch_size:
        # a preset with a fixed step count (proyecto9: 156 x 256) keeps its images per epoch at another batch size
        images = base.train.steps_per_epoch * base.train.batch_size
        overrides["train.steps_per_epoch"] = max(1, round(images / int(batch)))
    overrides.update({f"train.{key}": value for key, value in values.items()})
    overrides.update({f"arch.{key}": value for key, value in arch.items()})
    return overrides
