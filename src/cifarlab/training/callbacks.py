"""Keras-style callbacks: ModelCheckpoint and EarlyStopping, with the same names and meanings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cifarlab.config import TrainConfig
    from cifarlab.training.trainer import Trainer


class Callback:
    """Base class. The trainer calls the hooks; a callback ends a run by setting `trainer.stop_training`."""

    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        """Attach to the trainer that will call the hooks."""
        self.trainer = trainer

    def on_train_begin(self) -> None:
        """Called once before the first epoch."""

    def on_train_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        """Called after each optimiser step; `logs` holds running 'loss' and 'accuracy' as 0-d tensors."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch (1-based) with 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'lr'."""

    def on_train_end(self) -> None:
        """Called once after the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback has learnt so far (best value, patience used), saved with a resumable run."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a `state_dict()` when a run resumes."""


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state (parameters and buffers)."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


class _MonitorMixin:
    """Tracks the best value of a monitored metric, Keras' way ('auto': *loss* is minimised)."""

    def _init_monitor(self, monitor: str, mode: str, min_delta: float) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be auto, min or max; got '{mode}'")
        self.monitor = monitor
        self.mode = ("min" if "loss" in monitor else "max") if mode == "auto" else mode
        self.min_delta = abs(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    _STATE: tuple[str, ...] = ("best", "best_epoch", "best_weights")

    def state_dict(self) -> dict[str, Any]:
        """The monitored best so far (and the counters named in `_STATE`)."""
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back a `state_dict()`."""
        for name in self._STATE:
            setattr(self, name, state[name])

    def _value(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise ValueError(f"{type(self).__name__} monitors '{self.monitor}', which the logs lack: {', '.join(logs)}")
        return float(logs[self.monitor])


class EarlyStopping(_MonitorMixin, Callback):
    """Stop when `monitor` has not improved for `patience` epochs.

    Args:
        monitor: metric to watch, e.g. 'val_loss' or 'val_accuracy'.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: 'min', 'max' or 'auto' (min for losses, max otherwise).
        restore_best_weights: on stopping, put back the weights of the best epoch.
    """

    _STATE = ("best", "best_epoch", "best_weights", "wait", "restored_epoch")

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        self._init_monitor(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.restored_epoch: int | None = None  # the epoch whose weights it put back when it stopped

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        super().load_state_dict({"restored_epoch": None, **state})  # resume files written before it was kept

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = snapshot(self.trainer.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.trainer.model.load_state_dict(self.best_weights)
                self.restored_epoch = self.best_epoch
            self.trainer.log(
                f"early stopping at epoch {epoch}: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {self.best:.4f} at epoch {self.best_epoch})"
            )


class ModelCheckpoint(_MonitorMixin, Callback):
    """Keep (and optionally write) the weights of the best epoch, or of every epoch.

    Args:
        filepath: where to write the checkpoint (safetensors + JSON beside it); None = keep it in memory only.
        monitor: metric to watch.
        save_best_only: write only when `monitor` improves.
        mode: 'min', 'max' or 'auto'.
    """

    def __init__(
        self,
        filepath: str | Path | None = None,
        monitor: str = "val_accuracy",
        save_best_only: bool = True,
        mode: str = "auto",
    ) -> None:
        self._init_monitor(monitor, mode, 0.0)
        self.filepath = Path(filepath) if filepath is not None else None
        self.save_best_only = save_best_only
        self.best_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        value = self._value(logs)
        improved = self._improved(value)
        if improved:
            self.best, self.best_epoch = value, epoch
            self.best_weights = snapshot(self.trainer.model)
        if self.filepath is not None and (improved or not self.save_best_only):
            self.trainer.save_model(self.filepath, metrics={self.monitor: value}, epoch=epoch)


def recipe_callbacks(recipe: TrainConfig, checkpoint: str | Path | None = None) -> list[Callback]:
    """The recipe's own callbacks, in the order they run: its ModelCheckpoint, then one EarlyStopping per monitor.

    The trainer runs these, and `cifarlab readings` replays them over a recorded history: one definition for both.
    `checkpoint`: where the ModelCheckpoint writes (None: it keeps the best weights in memory only).
    """
    callbacks: list[Callback] = []
    if recipe.checkpoint_best:
        callbacks.append(ModelCheckpoint(checkpoint, monitor="val_accuracy", save_best_only=True))
    for monitor in recipe.early_stopping:
        callbacks.append(EarlyStopping(monitor, patience=recipe.patience, min_delta=recipe.min_delta,
                                       restore_best_weights=recipe.restore_best_weights))  # fmt: skip
    return callbacks


def tested_epoch(callbacks: list[Callback], recipe: TrainConfig, last_epoch: int) -> int:
    """The epoch whose weights the final test evaluates (see `TrainConfig.test_weights`).

    'checkpoint': the ModelCheckpoint's best, when the recipe keeps one. Otherwise the weights in memory: those the
    last EarlyStopping to stop put back (the callbacks run in order, so the last restore wins), else `last_epoch`'s.
    """
    if recipe.test_weights == "checkpoint":
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.best_weights is not None:
                return callback.best_epoch
    restored = [c.restored_epoch for c in callbacks if isinstance(c, EarlyStopping) and c.restored_epoch is not None]
    return restored[-1] if restored else last_epoch


def stop_reason(callbacks: list[Callback], epoch: int, epochs: int) -> str:
    """Why a run ended: 'early stopping at epoch ...', 'last epoch (N of N)', or that another callback stopped it.

    A callback that stops a run for its own reason says so in a `stop_message` attribute (e.g. a search's pruner).
    """
    for callback in callbacks:
        if getattr(callback, "stop_message", None):
            return str(callback.stop_message)
    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.wait >= callback.patience:
            return (
                f"early stopping at epoch {epoch} of {epochs}: {callback.monitor} did not improve for "
                f"{callback.patience} epochs (best {callback.best:.4f} at epoch {callback.best_epoch})"
            )
    if epoch >= epochs:
        return f"last epoch ({epoch} of {epochs})"
    return f"stopped at epoch {epoch} of {epochs} by a callback"
