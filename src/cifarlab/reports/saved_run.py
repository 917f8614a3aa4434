"""A finished run read back from its directory: what reports and comparisons are built from.

The files are written by `cifarlab.training.run_dir` (their one writer); a report or a comparison is built from
them alone, never by running the model again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.config import RunConfig, config_from_dict
from cifarlab.models.summary import count_params
from cifarlab.preset_changes import ladder_config_scale, preset_changes
from cifarlab.presets import get_preset
from cifarlab.training.history import History
from cifarlab.training.run_dir import CONFIG_NAME, HISTORY_NAME, METRICS_NAME, RUN_FILES, RunFiles
from cifarlab.transfer import preset_model

_NOT_THE_RECIPE = ("seed", "out", "quiet")  # config keys that do not change what is trained (for grouping seeds)


def config_group(config: dict[str, Any]) -> str:
    """A short hash of a run's config without its seed (and run directory): runs that differ only by seed share it."""
    recipe = {key: value for key, value in config.items() if key not in _NOT_THE_RECIPE}
    return hashlib.sha1(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass
class SavedRun:
    """A finished run read back from its directory (see `load_run`)."""

    run_dir: Path
    record: dict[str, Any]  # config.json
    metrics: dict[str, Any]  # metrics.json
    history: History

    @cached_property
    def config(self) -> RunConfig:
        """The resolved config the run trained with."""
        return config_from_dict(self.record["config"])

    @property
    def class_names(self) -> list[str]:
        """Class names, in label order."""
        evaluated = self.metrics["test"] or self.metrics.get("final_val") or {}
        return list(evaluated.get("class_names") or self.record["dataset"]["class_names"])

    @property
    def group(self) -> str:
        """The config hash without the seed (see `config_group`), of the config as read back.

        Read back, a record written before a config field existed groups with a newer one at the field's default.
        """
        return config_group(self.config.to_dict())

    @cached_property
    def predictions(self) -> dict[str, np.ndarray] | None:
        """predictions.npz's arrays, or None for a run saved before runs kept them."""
        path = RunFiles(self.run_dir).predictions
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {key: data[key] for key in data.files}

    @cached_property
    def robustness(self) -> dict[str, Any] | None:
        """robustness.json (accuracy under corruptions), or None where `cifarlab robustness` has not run."""
        path = RunFiles(self.run_dir).robustness
        return json.loads(path.read_text()) if path.is_file() else None

    @cached_property
    def params(self) -> dict[str, int] | None:
        """Keras-style parameter counts: saved by the run, else counted on the config's model (None if it fails)."""
        if "params" in self.metrics:
            return dict(self.metrics["params"])
        try:
            counts = count_params(preset_model(self.config))
        except Exception:  # a report still draws without the counts (e.g. a backbone run that moved)
            return None
        return counts.to_dict()

    @property
    def epochs_planned(self) -> int:
        """The recipe's epochs."""
        return int(self.record["config"]["train"]["epochs"])

    @property
    def epochs_run(self) -> int:
        """Epochs trained."""
        return int(self.metrics.get("epochs_run", len(self.history)))

    @property
    def train_seconds(self) -> float:
        """Seconds of training (epoch time includes each epoch's validation)."""
        return float(self.metrics.get("train_seconds", sum(self.history.history["seconds"])))

    @property
    def images_per_second(self) -> float | None:
        """Training images per second over the whole run."""
        train = self.record["config"]["train"]
        steps = train.get("steps_per_epoch")
        per_epoch = steps * train["batch_size"] if steps else self.record.get("dataset", {}).get("train")
        if not per_epoch or self.train_seconds <= 0:
            return None
        return per_epoch * self.epochs_run / self.train_seconds

    @property
    def best_val_accuracy(self) -> float | None:
        """Validation accuracy of the best epoch (or the best over the history), None without validation."""
        if self.metrics.get("val_accuracy") is not None:
            return float(self.metrics["val_accuracy"])
        values = [v for v in self.history.history["val_accuracy"] if v == v]
        return max(values) if values else None

    @property
    def _train_images(self) -> int | None:
        """Training images before validation was held out, as config.json's dataset records them."""
        dataset = self.record.get("dataset", {})
        return dataset["train"] + dataset.get("val", 0) if "train" in dataset else None

    @cached_property
    def changes(self) -> dict[str, Any] | None:
        """What the run changed from its preset's recipe (see `preset_changes`); None for no registered preset."""
        return preset_changes(self.config, self._train_images)

    @property
    def scale(self) -> float | None:
        """The epochs scale of a run of `cifarlab ladder --epochs-scale` (None for any other run)."""
        return ladder_config_scale(self.config, self._train_images)

    @property
    def seed_accuracy(self) -> float | None:
        """The seed's test accuracy (percent) for this run's preset, if it is one of the seed's steps."""
        try:
            return get_preset(self.config.preset).seed_accuracy
        except KeyError:
            return None

    @property
    def label(self) -> str:
        """The preset's name, with what the run changed in it.

        A shortened ladder run shows its scale ('proyecto4 x0.1'); any other change shows as options
        ('fast88 (epochs=1)', 'proyecto5 (lr=0.01, batch_size=64, +1 more)').
        """
        scale, changes = self.scale, self.changes
        if scale is not None:
            return f"{self.config.preset} x{scale:.3g}"
        if not changes:
            return self.config.preset
        shown = [f"{key}={_short_value(value)}" for key, value in list(changes.items())[:2]]
        more = f", +{len(changes) - 2} more" if len(changes) > 2 else ""
        return f"{self.config.preset} ({', '.join(shown)}{more})"

    @property
    def finished_at(self) -> str:
        """When the run finished (metrics.json's date, else the file's modification time)."""
        if self.metrics.get("finished_at"):
            return str(self.metrics["finished_at"])
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime((self.run_dir / METRICS_NAME).stat().st_mtime))


def _short_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_run(run_dir: str | Path) -> SavedRun:
    """Read a finished run: config.json, metrics.json and history.csv (predictions.npz when it is asked for).

    Raises:
        FileNotFoundError: if `run_dir` is not a finished run directory.
        ValueError: if one of its files cannot be read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        what = "a run that has not finished" if (run_dir / CONFIG_NAME).is_file() else "not a cifarlab run"
        raise FileNotFoundError(f"{run_dir} lacks {', '.join(missing)} ({what})")
    files = {}
    for name in (CONFIG_NAME, METRICS_NAME):
        try:
            files[name] = json.loads((run_dir / name).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{run_dir / name} is not readable JSON ({error})") from None
    return SavedRun(run_dir, files[CONFIG_NAME], files[METRICS_NAME], History.from_csv(run_dir / HISTORY_NAME))


def find_runs(root: str | Path) -> list[Path]:
    """Every finished run directory under `root` (itself included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--runs-dir {root}: no such folder")
    found = {path.parent for path in root.rglob(METRICS_NAME) if all((path.parent / n).is_file() for n in RUN_FILES)}
    return sorted(found)
