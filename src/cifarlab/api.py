"""The Python API behind the CLI: resolve a config, train a run, evaluate or load a saved model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarlab._io.atomic import NoSpaceError
from cifarlab._io.locks import locked_dir
from cifarlab.config import (
    SHORT_KEYS,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_toml,
)
from cifarlab.data import Dataset, load_dataset
from cifarlab.device import describe_hardware
from cifarlab.display.figures import history_figure
from cifarlab.display.html import run_html
from cifarlab.display.live import notebook_callbacks
from cifarlab.evaluation.calibration import MIN_CALIBRATION_IMAGES, fit_temperature
from cifarlab.evaluation.metrics import EvalResult
from cifarlab.inference.classifier import Classifier
from cifarlab.inference.explain import explain_mistakes
from cifarlab.models.registry import list_models, unknown_name_message
from cifarlab.models.summary import count_params
from cifarlab.presets import DEFAULT_PRESET, get_preset
from cifarlab.reports.report import write_report
from cifarlab.scoring import evaluate, robustness  # noqa: F401  (cifarlab.api.evaluate, .robustness)
from cifarlab.training.callbacks import Callback, stop_reason
from cifarlab.training.distributed import Distributed, env_rank, init_from_env
from cifarlab.training.history import History
from cifarlab.training.resume import load_resume_state
from cifarlab.training.run_dir import RunFiles, make_run_dir, run_record
from cifarlab.training.signals import TrainingStopped
from cifarlab.training.trainer import Trainer
from cifarlab.transfer.trainer import TransferTrainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    expanded = {SHORT_KEYS.get(key, key): value for key, value in overrides.items()}
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
    test: EvalResult | None  # None for a run that did not read the test split (a search's trial)
    best_epoch: int | None
    train_seconds: float
    notes: list[str]

    def summary(self, name: str | None = None) -> str:
        """A one-line summary of the run, named `name` (default: its preset)."""
        epochs = len(self.history)
        minutes, seconds = divmod(round(self.train_seconds), 60)
        plural = "" if epochs == 1 else "s"
        parts = [f"{name or self.config.preset}: {epochs} epoch{plural} in {minutes}m{seconds:02d}s"]
        if self.best_epoch is not None:
            parts.append(f"best val_accuracy {self.history.history['val_accuracy'][self.best_epoch - 1]:.4f} "
                         f"(epoch {self.best_epoch})")  # fmt: skip
        if self.test is not None:
            parts.append(f"test accuracy {self.test.accuracy:.4f}")
        return ", ".join(parts)

    def _repr_html_(self) -> str:
        return run_html(self)

    def plot(self) -> Figure:
        """The seed's two plots, loss and accuracy per epoch, train against validation (a matplotlib Figure)."""
        return history_figure(self.history, self.config.preset)


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


def train(
    preset: str | None = None,
    *,
    config: RunConfig | None = None,
    config_file: str | Path | None = None,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    test: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train a preset and save the run.

    Args:
        preset: a name from `cifarlab presets` (default: the default preset).
        config: a complete RunConfig to use instead of preset + overrides.
        config_file: a TOML file applied over the preset.
        dataset: data already in memory (otherwise `config.data` says where to load it from).
        callbacks: extra callbacks.
        test: evaluate the final model on the test split. False for a search's trial, which must never read it:
            its metrics and report then hold the validation split's figures, and `RunResult.test` is None.
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
    dataset = dataset if dataset is not None else load_training_data(config)
    run_dir = _make_shared_run_dir(config, dist)
    with locked_dir(run_dir) if dist.is_main else contextlib.nullcontext():  # no `--resume` of it while it trains
        try:
            trainer = _make_trainer(config, dataset, run_dir, callbacks)
        except BaseException:
            if dist.is_main and config.out is None and not any(run_dir.iterdir()):  # no empty runs/<preset>-<time>
                run_dir.rmdir()
            raise
        if dist.is_main:
            RunFiles(run_dir).write_record(_run_record(trainer, dataset))
        return _fit_and_save(trainer, run_dir, test)


def resume(
    run_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    quiet: bool | None = None,
    test: bool = True,
) -> RunResult:
    """Continue a run that stopped before it finished, from the end of its last complete epoch.

    The run's own config.json says what to train and on which data; the data must be the same (same source,
    classes and split sizes). The resumed run ends as the uninterrupted one would have, and writes the same files.

    Args:
        run_dir: the run directory of the stopped run.
        dataset: the data, if the run was given data in memory rather than a source to load.
        callbacks: extra callbacks.
        quiet: override the run's own quiet setting.
        test: as in `train` (a search's trial resumes with False).

    Raises:
        FileNotFoundError: if `run_dir` is not a run directory.
        ValueError: if the run has finished, has no resume state, or the data differs from the run's.
    """
    run_dir = Path(run_dir)
    record_path = RunFiles(run_dir).config
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a cifarlab run directory (no config.json)")
    with locked_dir(run_dir) if env_rank() == 0 else contextlib.nullcontext():  # rank 0 of a distributed run
        return _resume(run_dir, record_path, dataset, callbacks, quiet, test)


def _resume(
    run_dir: Path,
    record_path: Path,
    dataset: Dataset | None,
    callbacks: list[Callback] | None,
    quiet: bool | None,
    test: bool,
) -> RunResult:
    files = RunFiles(run_dir)
    if not files.resume.is_file():
        if files.is_finished():
            raise ValueError(f"run {run_dir} has finished; there is nothing to resume")
        raise ValueError(f"run {run_dir} stopped before its first epoch ended (no {files.resume.name}); start it again")
    try:
        record = json.loads(record_path.read_text())
        config = config_from_dict(record["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{record_path} is not a readable run record ({type(error).__name__}: {error})") from None
    if quiet is not None:
        config = dataclasses.replace(config, quiet=quiet)
    state = load_resume_state(files.resume)
    if env_rank() == 0:
        files.drop_leftovers()
    dataset = dataset if dataset is not None else load_training_data(config)
    trainer = _make_trainer(config, dataset, run_dir, callbacks)
    now = json.loads(json.dumps(_dataset_record(trainer, dataset)))  # as config.json holds it
    if now != record.get("dataset"):
        raise ValueError(f"the data differs from run {run_dir}'s: it trained on {record.get('dataset')}, now {now}")
    trainer.load_state_dict(state)
    trainer.log(f"resuming {run_dir} after epoch {trainer.epoch} of {config.train.epochs}")
    return _fit_and_save(trainer, run_dir, test)


def finish_run(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    quiet: bool | None = None,
    test: bool = True,
) -> RunResult | None:
    """Bring the run at `config.out` to its end, whatever state it was left in: what resumable commands share.

    A run that has finished is left as it is (None); one that stopped after a complete epoch is resumed; one that
    stopped before its first epoch ended is deleted and started again; a missing one is started.

    Args:
        config: the run's config; `config.out` is its run directory.
        dataset: as in `train`.
        callbacks: as in `train`.
        quiet: as in `resume` (None: the run's own setting).
        test: as in `train`.
    """
    assert config.out is not None, "finish_run needs the run's directory (config.out)"
    run_dir = Path(config.out)
    files = RunFiles(run_dir)
    if files.is_finished():
        return None
    if files.resume.is_file():
        return resume(run_dir, dataset=dataset, callbacks=callbacks, quiet=quiet, test=test)
    if run_dir.is_dir() and files.config.is_file():  # stopped before its first epoch ended: nothing to keep
        # under the run's lock: a run still in its first epoch holds it (a search's trial whose heartbeat merely
        # stalled, a second `train` into the same --out), and is then refused in one line instead of deleted
        with locked_dir(run_dir):
            if files.resume.is_file() or files.is_finished():  # it got further meanwhile, and then stopped
                return finish_run(config, dataset=dataset, callbacks=callbacks, quiet=quiet, test=test)
            shutil.rmtree(run_dir)
    if quiet is not None:
        config = dataclasses.replace(config, quiet=quiet)
    return train(config=config, dataset=dataset, callbacks=callbacks, test=test)


def load_training_data(config: RunConfig) -> Dataset:
    """The dataset a run config names (`config.data`), loaded (and for an image folder decoded and cached)."""
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
    callbacks = [*(callbacks or []), *notebook_callbacks(config)]  # in Jupyter: the run's bar and live curves
    return trainer_class(config, dataset, run_dir=run_dir, callbacks=callbacks)


def _run_record(trainer: Trainer, dataset: Dataset) -> dict[str, Any]:
    """config.json: the resolved config (a transfer run names its backbone's architecture), versions, data."""
    return run_record(trainer.config, device=str(trainer.device), hardware=describe_hardware(trainer.device),
                      precision=trainer.precision, dataset=_dataset_record(trainer, dataset))  # fmt: skip


def _dataset_record(trainer: Trainer, dataset: Dataset) -> dict[str, Any]:
    """The data a run trains on, as config.json records it (and `resume` checks it)."""
    return {
        "source": dataset.source,
        "class_names": trainer.class_names,  # after --classes
        "train": len(trainer.train_split),
        "val": len(trainer.val_split) if trainer.val_split is not None else 0,
        "test": len(trainer.test_split),
    }


def _fit_and_save(trainer: Trainer, run_dir: Path, test_split: bool = True) -> RunResult:
    """Train to the end, test (unless `test_split` is False), write the model, metrics and report; drop the resume."""
    config, files = trainer.config, RunFiles(run_dir)
    nproc = f" --nproc {trainer.dist.world_size}" if trainer.dist.enabled else ""
    again = f"cifarlab train --resume {run_dir}{nproc}"
    try:
        history = trainer.fit()
    except TrainingStopped as stop:  # a signal: the state was saved at a step boundary
        raise TrainingStopped(stop.signum, f"continue with: {again}") from None
    except KeyboardInterrupt:
        if files.resume.is_file():
            raise KeyboardInterrupt(f"continue with: {again}") from None
        raise
    except NoSpaceError as error:
        if files.resume.is_file():
            raise NoSpaceError(error.errno, f"{error}; make room, then continue with: {again}") from None
        raise
    best_epoch = trainer.restore_best()
    tta = " with test-time augmentation" if config.train.tta else ""
    test = None
    if test_split:
        trainer.log(f"testing the final model{tta}")
        test = trainer.evaluate(trainer.test_split, tta=config.train.tta, desc="test")
    val_split = trainer.val_split  # its predictions let the report fit a temperature on validation, never on test
    if val_split is not None and not test_split:
        trainer.log(f"validating the final model{tta} (the test split is not read)")
    val_eval = trainer.evaluate(val_split, tta=config.train.tta, desc="val") if val_split is not None else None
    train_seconds = sum(history.history["seconds"])
    result = RunResult(run_dir, config, history, test, best_epoch, train_seconds, trainer.notes)
    if not trainer.dist.is_main:  # rank 0 writes the run's files
        return result
    files.write_predictions(_probabilities(test) if test else None, trainer.test_split.labels if test else None,
                            _probabilities(val_eval) if val_eval is not None else None,
                            val_split.labels if val_split is not None else None)  # fmt: skip
    val = {key: history.history[key][best_epoch - 1] for key in ("val_loss", "val_accuracy")} if best_epoch else {}
    metrics = {"test_accuracy": test.accuracy if test else None, "test_loss": test.loss if test else None, **val}
    # the shipped probabilities are softmax(logits / T), T fitted on validation (Guo et al. 2017); 1 without one
    temperature = (fit_temperature(_probabilities(val_eval).numpy(), val_split.labels.cpu().numpy())
                   if val_eval is not None and val_split is not None and len(val_split) >= MIN_CALIBRATION_IMAGES
                   else None)  # fmt: skip
    meta = trainer.checkpoint_meta(metrics, epoch=best_epoch or trainer.epoch) | {"temperature": temperature}
    files.write_checkpoint(trainer.model, meta)
    files.write_metrics({
        "test_accuracy": test.accuracy if test else None,
        "test": test.to_dict(trainer.class_names) if test else None,
        "final_val": val_eval.to_dict(trainer.class_names) if val_eval is not None else None,
        "temperature": temperature,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "tested_epoch": trainer.tested_epoch(),  # whose weights the test evaluated (train.test_weights)
        "train_seconds": train_seconds,
        **val,
        "stopped": (trainer.clock and trainer.clock.stop_reason(trainer.epoch, config.train.epochs))
        or stop_reason(trainer.callbacks, trainer.epoch, config.train.epochs),
        "notes": list(trainer.notes),
        "params": count_params(trainer.model).to_dict(),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    })  # fmt: skip
    if test is not None:  # Grad-CAM of the report's mistakes; the run is saved, so a failure is only a note
        try:
            classifier = Classifier.load(files.checkpoint, device=str(trainer.device))
            files.write_explanations(**explain_mistakes(classifier, trainer.test_split.images,
                                                        _probabilities(test).cpu().float().numpy(),
                                                        trainer.test_split.labels.cpu().numpy()))  # fmt: skip
        except Exception as error:
            trainer.log(f"note: {files.explanations.name} not written ({type(error).__name__}: {error}); the "
                        "report shows the mistakes without their Grad-CAM maps")  # fmt: skip
    _finish_run(trainer, run_dir)
    files.drop_resume()
    return result


def _probabilities(result: EvalResult) -> torch.Tensor:
    if result.probabilities is None:
        raise ValueError("the evaluation kept no probabilities to save")
    return result.probabilities


def _finish_run(trainer: Trainer, run_dir: Path) -> None:
    """At the end of a run: the report (as `cifarlab report RUN` draws it), then the trackers log the run's files.

    Training is over and its results are saved by then, so a failure here prints a note instead of failing the run.
    """
    trainer.log("writing the report")
    try:
        write_report(run_dir, test_images=trainer.test_split.images)
    except Exception as error:  # the run is saved; `cifarlab report` can try again
        trainer.log(f"note: report.html not written ({type(error).__name__}: {error}); "
                    f"try again with: cifarlab report {run_dir}")  # fmt: skip
    for callback in trainer.callbacks:
        if hasattr(callback, "on_run_saved"):
            callback.on_run_saved(run_dir)
