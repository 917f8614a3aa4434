"""The Python API behind the CLI: resolve a config, train a run, evaluate or load a saved model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarlab import __version__
from cifarlab._io import NoSpaceError, locked_dir, write_json
from cifarlab.classifier import Classifier
from cifarlab.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    TransferConfig,
    apply_overrides,
    config_from_dict,
    load_toml,
)
from cifarlab.data import Dataset, load_dataset
from cifarlab.data.dataset import select_classes
from cifarlab.evaluation.metrics import EvalResult
from cifarlab.models.registry import list_models, unknown_name_message
from cifarlab.presets import DEFAULT_PRESET, get_preset
from cifarlab.reports.plots import plot_history
from cifarlab.reports.report import finish_run
from cifarlab.reports.run_files import PREDICTIONS_NAME, run_facts, save_predictions
from cifarlab.training.callbacks import Callback
from cifarlab.training.checkpoint import CHECKPOINT_NAME
from cifarlab.training.device import describe_hardware
from cifarlab.training.distributed import Distributed, env_rank, init_from_env
from cifarlab.training.history import History
from cifarlab.training.resume import RESUME_NAME, load_resume_state
from cifarlab.training.signals import TrainingStopped
from cifarlab.training.trainer import Trainer
from cifarlab.transfer.trainer import TransferTrainer

if TYPE_CHECKING:
    from cifarlab.export.runtime import OnnxClassifier

_SHORT_KEYS = {
    **{f.name: f"data.{f.name}" for f in dataclasses.fields(DataConfig)},
    **{f.name: f"train.{f.name}" for f in dataclasses.fields(TrainConfig)},
    **{f.name: f"transfer.{f.name}" for f in dataclasses.fields(TransferConfig)},
    "data": "data.source",
}


def resolve_config(preset: str | None = None, config_file: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Build a run config: the preset, then a TOML file, then explicit overrides (None values are skipped).

    Overrides may use short names (`epochs=5`, `val_size=0`, `data='path'`) or dotted ones (`train.epochs`).

    A TOML file's top-level `preset = "name"` chooses the preset when `preset` is not given.

    Raises:
        KeyError: for an unknown preset or model.
        ValueError: for an unknown key or an invalid value.
    """
    toml = load_toml(config_file) if config_file is not None else {}
    named = toml.pop("preset", None)
    if named is not None and preset is not None and named != preset:
        raise ValueError(f"--preset {preset} and preset = {named!r} in {config_file} disagree; drop one of them")
    if named is not None and not isinstance(named, str):
        raise ValueError(f"preset in {config_file} must be a preset name (a string), got {named!r}")
    config = get_preset(preset or named or DEFAULT_PRESET).config
    config = apply_overrides(config, toml)
    expanded = {_SHORT_KEYS.get(key, key): value for key, value in overrides.items()}
    config = apply_overrides(config, expanded)
    if config.model not in list_models():  # fail now, not after the data has loaded
        raise KeyError(unknown_name_message("model", config.model, list_models(), "models"))
    return config


@dataclass
class RunResult:
    """What `train` returns: where the run went and how it did."""

    run_dir: Path
    config: RunConfig
    history: History
    test: EvalResult
    best_epoch: int | None
    train_seconds: float
    notes: list[str]

    def summary(self) -> str:
        """A one-line summary of the run."""
        epochs = len(self.history)
        minutes, seconds = divmod(round(self.train_seconds), 60)
        parts = [f"{self.config.preset}: {epochs} epochs in {minutes}m{seconds:02d}s"]
        if self.best_epoch is not None:
            parts.append(f"best val_accuracy {self.history.history['val_accuracy'][self.best_epoch - 1]:.4f} "
                         f"(epoch {self.best_epoch})")  # fmt: skip
        parts.append(f"test accuracy {self.test.accuracy:.4f}")
        return ", ".join(parts)


def make_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    """The run directory: `config.out`, or runs/<preset>-<timestamp> (made unique).

    Raises:
        ValueError: if `--out` is not empty, or the directory cannot be made or written to (before any training).
    """
    if config.out is not None:
        path = Path(config.out)
        if path.is_dir() and any(path.iterdir()):
            raise ValueError(f"--out {path} exists and is not empty; choose a new directory")
        _make_writable_dir(path, f"--out {path}")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{config.preset}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    _make_writable_dir(path, f"run directory {path} (choose another with --out)")
    return path


def _make_writable_dir(path: Path, name: str) -> None:
    """Create `path` (and its parents) and check a file can be written in it; else a one-line ValueError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{name}: cannot write there ({error.strerror or error})") from None


def _make_shared_run_dir(config: RunConfig, dist: Distributed) -> Path:
    """make_run_dir on rank 0; its path, or its error, on every rank."""
    if not dist.enabled:
        return make_run_dir(config)
    path = error = None
    if dist.is_main:
        try:
            path = make_run_dir(config)
        except ValueError as failure:
            error = str(failure)
    path, error = dist.from_main((path, error))
    if error is not None:
        raise ValueError(error)
    return path


def git_revision() -> str | None:
    """The git commit of the cifarlab source, when it runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def train(
    preset: str | None = None,
    *,
    config: RunConfig | None = None,
    config_file: str | Path | None = None,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    **overrides: Any,
) -> RunResult:
    """Train a preset and save the run.

    Args:
        preset: a name from `cifarlab presets` (default: the default preset).
        config: a complete RunConfig to use instead of preset + overrides.
        config_file: a TOML file applied over the preset.
        dataset: data already in memory (otherwise `config.data` says where to load it from).
        callbacks: extra callbacks.
        **overrides: config overrides, e.g. `epochs=5, data="path/to/folder", val_size=0`.

    Returns:
        A RunResult; the run directory holds config.json, history.csv, model.safetensors + model.json,
        metrics.json, loss.png and accuracy.png.

    Example:
        >>> result = cifarlab.train("proyecto4", data="../shared/datasets/cifar10-jpeg", epochs=5)
        >>> result.test.percent()
        '> 71.230'
    """
    config = config or resolve_config(preset, config_file, **overrides)
    dist = init_from_env(config.device)  # under torchrun: this process's rank; rank 0 writes the run directory
    dataset = dataset if dataset is not None else _load_training_data(config)
    run_dir = _make_shared_run_dir(config, dist)
    with locked_dir(run_dir) if dist.is_main else contextlib.nullcontext():  # no `--resume` of it while it trains
        try:
            trainer = _make_trainer(config, dataset, run_dir, callbacks)
        except BaseException:
            if dist.is_main and config.out is None and not any(run_dir.iterdir()):  # no empty runs/<preset>-<time>
                run_dir.rmdir()
            raise
        if dist.is_main:
            write_json(run_dir / "config.json", _run_record(trainer, dataset))
        return _fit_and_save(trainer, run_dir)


def resume(
    run_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    quiet: bool | None = None,
) -> RunResult:
    """Continue a run that stopped before it finished, from the end of its last complete epoch.

    The run's own config.json says what to train and on which data; the data must be the same (same source,
    classes and split sizes). The resumed run ends as the uninterrupted one would have, and writes the same files.

    Args:
        run_dir: the run directory of the stopped run.
        dataset: the data, if the run was given data in memory rather than a source to load.
        callbacks: extra callbacks.
        quiet: override the run's own quiet setting.

    Raises:
        FileNotFoundError: if `run_dir` is not a run directory.
        ValueError: if the run has finished, has no resume state, or the data differs from the run's.
    """
    run_dir = Path(run_dir)
    record_path = run_dir / "config.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a cifarlab run directory (no config.json)")
    with locked_dir(run_dir) if env_rank() == 0 else contextlib.nullcontext():  # rank 0 of a distributed run
        return _resume(run_dir, record_path, dataset, callbacks, quiet)


def _resume(
    run_dir: Path, record_path: Path, dataset: Dataset | None, callbacks: list[Callback] | None, quiet: bool | None
) -> RunResult:
    resume_path = run_dir / RESUME_NAME
    if not resume_path.is_file():
        if (run_dir / "metrics.json").is_file():
            raise ValueError(f"run {run_dir} has finished; there is nothing to resume")
        raise ValueError(f"run {run_dir} stopped before its first epoch ended (no {RESUME_NAME}); start it again")
    try:
        record = json.loads(record_path.read_text())
        config = config_from_dict(record["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{record_path} is not a readable run record ({type(error).__name__}: {error})") from None
    if quiet is not None:
        config = dataclasses.replace(config, quiet=quiet)
    state = load_resume_state(resume_path)
    if env_rank() == 0:
        for leftover in run_dir.glob(".*.tmp"):  # a write cut short by a crash (the file it was replacing is whole)
            leftover.unlink(missing_ok=True)
    dataset = dataset if dataset is not None else _load_training_data(config)
    trainer = _make_trainer(config, dataset, run_dir, callbacks)
    now = json.loads(json.dumps(_dataset_record(trainer, dataset)))  # as config.json holds it
    if now != record.get("dataset"):
        raise ValueError(f"the data differs from run {run_dir}'s: it trained on {record.get('dataset')}, now {now}")
    trainer.load_state_dict(state)
    trainer.log(f"resuming {run_dir} after epoch {trainer.epoch} of {config.train.epochs}")
    return _fit_and_save(trainer, run_dir)


def _load_training_data(config: RunConfig) -> Dataset:
    data = config.data
    return load_dataset(
        data.source,
        data_dir=data.data_dir,
        image_size=data.image_size,
        skip_bad_images=data.skip_bad_images,
        progress=not config.quiet,
    )


def _make_trainer(config: RunConfig, dataset: Dataset, run_dir: Path, callbacks: list[Callback] | None) -> Trainer:
    trainer_class = TransferTrainer if config.transfer.backbone is not None else Trainer
    return trainer_class(config, dataset, run_dir=run_dir, callbacks=callbacks)


def _run_record(trainer: Trainer, dataset: Dataset) -> dict[str, Any]:
    """config.json: the resolved config (a transfer run names its backbone's architecture), versions, data."""
    return {
        "config": trainer.config.to_dict(),
        "git_revision": git_revision(),
        "cifarlab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(trainer.device),
        "hardware": describe_hardware(trainer.device),
        "precision": trainer.precision,
        "dataset": _dataset_record(trainer, dataset),
    }


def _dataset_record(trainer: Trainer, dataset: Dataset) -> dict[str, Any]:
    """The data a run trains on, as config.json records it (and `resume` checks it)."""
    return {
        "source": dataset.source,
        "class_names": trainer.class_names,  # after --classes
        "train": len(trainer.train_split),
        "val": len(trainer.val_split) if trainer.val_split is not None else 0,
        "test": len(trainer.test_split),
    }


def _fit_and_save(trainer: Trainer, run_dir: Path) -> RunResult:
    """Train to the end, test, and write the model, metrics and plots; then drop the resume state."""
    config = trainer.config
    nproc = f" --nproc {trainer.dist.world_size}" if trainer.dist.enabled else ""
    again = f"cifarlab train --resume {run_dir}{nproc}"
    try:
        history = trainer.fit()
    except TrainingStopped as stop:  # a signal: the state was saved at a step boundary
        raise TrainingStopped(stop.signum, f"continue with: {again}") from None
    except KeyboardInterrupt:
        if (run_dir / RESUME_NAME).is_file():
            raise KeyboardInterrupt(f"continue with: {again}") from None
        raise
    except NoSpaceError as error:
        if (run_dir / RESUME_NAME).is_file():
            raise NoSpaceError(error.errno, f"{error}; make room, then continue with: {again}") from None
        raise
    best_epoch = trainer.restore_best()
    test = trainer.evaluate(trainer.test_split, tta=config.train.tta)
    val_split = trainer.val_split  # its predictions let the report fit a temperature on validation, never on test
    val_eval = trainer.evaluate(val_split, tta=config.train.tta) if val_split is not None else None
    train_seconds = sum(history.history["seconds"])
    if not trainer.dist.is_main:  # rank 0 writes the run's files
        return RunResult(run_dir, config, history, test, best_epoch, train_seconds, trainer.notes)
    save_predictions(run_dir / PREDICTIONS_NAME, test, trainer.test_split.labels, val_eval,
                     val_split.labels if val_split is not None else None)  # fmt: skip
    val = {key: history.history[key][best_epoch - 1] for key in ("val_loss", "val_accuracy")} if best_epoch else {}
    trainer.save_model(
        run_dir / CHECKPOINT_NAME,
        metrics={"test_accuracy": test.accuracy, "test_loss": test.loss, **val},
        epoch=best_epoch or trainer.epoch,
    )
    write_json(
        run_dir / "metrics.json",
        {
            "test_accuracy": test.accuracy,
            "test": test.to_dict(trainer.class_names),
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "train_seconds": train_seconds,
            **val,
            **run_facts(trainer),
        },
    )
    plot_history(history, run_dir)
    finish_run(trainer, run_dir)  # report.html, then the trackers' artifacts; a failure here only prints a note
    (run_dir / RESUME_NAME).unlink(missing_ok=True)
    return RunResult(run_dir, config, history, test, best_epoch, train_seconds, trainer.notes)


def load(path: str | Path, *, device: str = "auto", precision: str = "auto") -> Classifier | OnnxClassifier:
    """Load a trained model from a run directory, a checkpoint file or an exported .onnx file.

    An .onnx file runs on ONNX Runtime (CPU; `device` and `precision` do not apply) with the same methods.

    Example:
        >>> clf = cifarlab.load("runs/proyecto4-20261128-101500")
        >>> probabilities = clf.predict(images)  # (N, 3, 32, 32) uint8
        >>> clf.predict_files(["cat.jpg", "photos/"], top_k=3)[0].classes
        ['cat', 'dog', 'deer']
    """
    if Path(path).suffix.lower() == ".onnx":
        from cifarlab.export.runtime import OnnxClassifier

        return OnnxClassifier(path)
    return Classifier.load(path, device=device, precision=precision)


def evaluate(
    path: str | Path,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> EvalResult:
    """Evaluate a saved model on the test split of a dataset (by default the one it was trained on).

    Raises:
        ValueError: if the dataset's classes differ from the model's.
    """
    classifier = load(path, device=device, precision=precision)
    source = data or classifier.meta.get("data_source") or "cifar10"
    if data is None and data_dir is None:  # the data the model was trained on, from where it was read
        data_dir = classifier.meta.get("data_dir")
    dataset = load_dataset(source, data_dir=data_dir, image_size=classifier.image_size, progress=progress)
    if dataset.class_names != classifier.class_names and set(classifier.class_names) <= set(dataset.class_names):
        # a run trained with --classes: its classes, relabelled in its order
        dataset = select_classes(dataset, tuple(classifier.class_names), None, 0)
    if dataset.class_names != classifier.class_names:
        raise ValueError(
            f"the classes of {source} ({', '.join(dataset.class_names)}) differ from the model's "
            f"({', '.join(classifier.class_names)})"
        )
    return classifier.evaluate(dataset.test)
