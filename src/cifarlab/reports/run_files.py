"""What a run saves for later looks (predictions.npz, facts in metrics.json) and how reports read a run back.

A report or a comparison is built from these files alone, never by running the model again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlab._io import write_with
from cifarlab.config import RunConfig, config_from_dict
from cifarlab.training.history import History

if TYPE_CHECKING:
    from cifarlab.evaluation.metrics import EvalResult
    from cifarlab.training.trainer import Trainer

PREDICTIONS_NAME = "predictions.npz"
RUN_FILES = ("config.json", "metrics.json", "history.csv")  # what makes a folder a finished run
_NOT_THE_RECIPE = ("seed", "out", "quiet")  # config keys that do not change what is trained (for grouping seeds)


def save_predictions(
    path: str | Path,
    test: EvalResult,
    test_labels: Any,
    val: EvalResult | None = None,
    val_labels: Any = None,
) -> None:
    """Write predictions.npz: the test split's probabilities and labels, and the validation split's if any.

    Keys: `test_probabilities` (N, K) float32, `test_labels` (N,) int64, `test_index` (N,) int64 (the row of
    each image in the run's test split, i.e. the data source's test split after `--classes`), and, when the
    run had a validation split, `val_probabilities` and `val_labels` (for temperature scaling).
    """
    arrays = {
        "test_probabilities": _probabilities(test),
        "test_labels": _numpy(test_labels).astype(np.int64),
        "test_index": np.arange(len(test_labels), dtype=np.int64),
    }
    if val is not None and val_labels is not None:
        arrays["val_probabilities"] = _probabilities(val)
        arrays["val_labels"] = _numpy(val_labels).astype(np.int64)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez_compressed(f, **arrays)

    write_with(path, write)


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)


def _probabilities(result: EvalResult) -> np.ndarray:
    if result.probabilities is None:
        raise ValueError("the evaluation kept no probabilities to save")
    return _numpy(result.probabilities).astype(np.float32)


def run_facts(trainer: Trainer) -> dict[str, Any]:
    """What metrics.json adds for reports: why training stopped, the run's notes, Keras-style counts, the date."""
    from cifarlab.models.summary import count_params

    counts = count_params(trainer.model)
    return {
        "stopped": stop_reason(trainer),
        "notes": list(trainer.notes),
        "params": {"total": counts.total, "trainable": counts.trainable, "non_trainable": counts.non_trainable},
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def stop_reason(trainer: Trainer) -> str:
    """'early stopping on val_loss ...', 'last epoch (N of N)', or that something else stopped it."""
    from cifarlab.training.callbacks import EarlyStopping

    epochs = trainer.recipe.epochs
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.wait >= callback.patience:
            return (
                f"early stopping at epoch {trainer.epoch} of {epochs}: {callback.monitor} did not improve for "
                f"{callback.patience} epochs (best {callback.best:.4f} at epoch {callback.best_epoch})"
            )
    if trainer.epoch >= epochs:
        return f"last epoch ({trainer.epoch} of {epochs})"
    return f"stopped at epoch {trainer.epoch} of {epochs} by a callback"


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
        return list(self.metrics["test"]["class_names"])

    @property
    def group(self) -> str:
        """The config hash without the seed (see `config_group`)."""
        return config_group(self.record["config"])

    @cached_property
    def predictions(self) -> dict[str, np.ndarray] | None:
        """predictions.npz's arrays, or None for a run saved before runs kept them."""
        path = self.run_dir / PREDICTIONS_NAME
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {key: data[key] for key in data.files}

    @cached_property
    def params(self) -> dict[str, int] | None:
        """Keras-style parameter counts: saved by the run, else counted on the config's model (None if it fails)."""
        if "params" in self.metrics:
            return dict(self.metrics["params"])
        try:
            from cifarlab.models.summary import count_params
            from cifarlab.transfer import preset_model

            counts = count_params(preset_model(self.config))
        except Exception:  # a report still draws without the counts (e.g. a backbone run that moved)
            return None
        return {"total": counts.total, "trainable": counts.trainable, "non_trainable": counts.non_trainable}

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
    def scale(self) -> float | None:
        """The epochs scale of a shortened run of a preset (1.0 for the preset's own epochs)."""
        from cifarlab.ladder import ladder_config_scale

        return ladder_config_scale(self.config)

    @property
    def seed_accuracy(self) -> float | None:
        """The seed's test accuracy (percent) for this run's preset, if it is one of the seed's steps."""
        from cifarlab.presets import get_preset

        try:
            return get_preset(self.config.preset).seed_accuracy
        except KeyError:
            return None

    @property
    def label(self) -> str:
        """The preset's name, with its epochs scale when it is not 1 (e.g. 'proyecto4 x0.1')."""
        scale = self.scale
        return self.config.preset if scale is None or abs(scale - 1) < 1e-9 else f"{self.config.preset} x{scale:.3g}"

    @property
    def finished_at(self) -> str:
        """When the run finished (metrics.json's date, else the file's modification time)."""
        if self.metrics.get("finished_at"):
            return str(self.metrics["finished_at"])
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime((self.run_dir / "metrics.json").stat().st_mtime))


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
        what = "a run that has not finished" if (run_dir / "config.json").is_file() else "not a cifarlab run"
        raise FileNotFoundError(f"{run_dir} lacks {', '.join(missing)} ({what})")
    files = {}
    for name in ("config.json", "metrics.json"):
        try:
            files[name] = json.loads((run_dir / name).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{run_dir / name} is not readable JSON ({error})") from None
    return SavedRun(run_dir, files["config.json"], files["metrics.json"], History.from_csv(run_dir / "history.csv"))


def find_runs(root: str | Path) -> list[Path]:
    """Every finished run directory under `root` (itself included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--runs-dir {root}: no such folder")
    found = {path.parent for path in root.rglob("metrics.json") if all((path.parent / n).is_file() for n in RUN_FILES)}
    return sorted(found)
