"""The Trainer: one model, one recipe, one dataset; `fit` runs the epochs and returns a History.

A little past the ~400-line rule on purpose: the epoch loop and the state it saves and restores (`state_dict`,
`load_state_dict`) must change together, so they stay in one file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cifarlab import progress
from cifarlab._version import __version__
from cifarlab.config import RunConfig
from cifarlab.data.dataset import Dataset, balanced_first, select_classes, with_validation
from cifarlab.data.loader import BatchLoader, Normalization
from cifarlab.device import (
    autocast,
    flush_denormals,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from cifarlab.evaluation.metrics import EvalResult, evaluate_model
from cifarlab.evaluation.tta import TTA
from cifarlab.inference.checkpoint import load_state, save_checkpoint
from cifarlab.models.registry import check_accepts_size, create_model
from cifarlab.training.callbacks import Callback, ModelCheckpoint, recipe_callbacks, tested_epoch
from cifarlab.training.clock import TrainingClock
from cifarlab.training.distributed import init_for_run
from cifarlab.training.ema import WeightAverage
from cifarlab.training.history import History
from cifarlab.training.losses import training_loss
from cifarlab.training.run_dir import RunFiles
from cifarlab.training.schedules import build_optimizer, build_scheduler
from cifarlab.training.signals import StopRequests, TrainingStopped

WHITENING_SAMPLE = 5000  # training images a model's data-fitted first layer (AirNet's whitening) is fitted on,
# the classes in turn: an image folder lists its images class by class, so its first 5,000 are one or two classes
LOG_EVERY_STEPS = 10  # how often the progress bar reads the running loss (each read syncs a GPU)


class Trainer:
    """Train one model with one recipe on one dataset.

    Args:
        config: the resolved run configuration.
        dataset: the data; a validation split is held out of train here when it has none.
        run_dir: where checkpoints go while training (None: keep them in memory only).
        callbacks: callbacks run after the recipe's own (ModelCheckpoint, EarlyStopping).

    Attributes:
        model: the network (not compiled; `forward_model` is what runs the batches).
        history: per-epoch metrics.
        stop_training: set by a callback to end `fit` after the current epoch.
    """

    def __init__(
        self,
        config: RunConfig,
        dataset: Dataset,
        *,
        run_dir: str | Path | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.config = config
        self.recipe = config.train
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.files = RunFiles(self.run_dir) if self.run_dir is not None else None
        self.dist = init_for_run(config)  # one process alone, or a rank of a torchrun job
        self.writes = self.run_dir is not None and self.dist.is_main  # rank 0 alone writes the run directory
        self.device = self.dist.device(resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        flush_denormals(self.device)
        self.notes: list[str] = list(dataset.notes)
        seed_everything(config.seed)
        dataset = select_classes(dataset, config.data.classes, config.data.per_class_limit, config.seed)
        dataset = with_validation(dataset, config.data.val_size, config.seed)
        self.class_names = dataset.class_names
        self.image_size = dataset.image_size
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.to(self.device) if dataset.val is not None else None
        self.test_split = dataset.test
        self.data_source = dataset.source
        if config.data.normalize == "standardize":
            self.normalization = Normalization.fit(dataset.train.images)
        else:
            self.normalization = Normalization()
        self.model_kwargs = {"num_classes": len(self.class_names), "image_size": self.image_size,
                             **config.arch.kwargs()}  # fmt: skip
        self.model = self.build_model().to(self.device)
        if hasattr(self.model, "init_from_data") and self.dist.is_main:  # e.g. whitening filters from the data
            sample = self.train_split.images[balanced_first(self.train_split.labels, WHITENING_SAMPLE)]
            self.model.init_from_data(self.normalization(sample.float()))
        self.model = self.dist.prepare_model(self.model, config, len(self.train_split))  # rank 0's start, everywhere
        self.low_res_size = self.recipe.low_res_side(self.image_size)  # progressive resizing: the early epochs' side
        if self.low_res_size is not None:
            check_accepts_size(self.model, self.config.model, self.low_res_size, self.image_size, self.device)
        elif self.recipe.low_res_size:
            self.notes.append(f"images are {self.image_size}px, not larger than train.low_res_size "
                              f"{self.recipe.low_res_size}: progressive resizing is off")  # fmt: skip
        if self.recipe.whiten_bias_epochs and not isinstance(getattr(self.model, "whiten", None), torch.nn.Conv2d):
            raise ValueError(f"train.whiten_bias_epochs: model {self.config.model!r} has no whitening conv "
                             "(only AirNet models do)")  # fmt: skip
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = self._wrap()
        self.train_loader = BatchLoader(
            self.train_split,
            self.recipe.batch_size,
            self.normalization,
            shuffle=True,
            augment=self.recipe.augment,
            steps_per_epoch=self.recipe.steps_per_epoch,
            channels_last=config.channels_last,
            seed=config.seed,
            **self.dist.loader_options(config.seed),  # this rank's share of each batch, augmented its own way
        )
        self.optimizer = build_optimizer(self.model, self.recipe)
        self.clock = TrainingClock(self.recipe.duration) if self.recipe.duration is not None else None
        self.scheduler = build_scheduler(self.optimizer, self.recipe, len(self.train_loader),
                                         self.clock.progress if self.clock is not None else None)  # fmt: skip
        self.ema = WeightAverage(self.model, self.recipe.ema) if self.recipe.ema > 0 else None
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        self.stop_requests = StopRequests()  # SIGTERM/SIGINT while fitting: save at the next step, then stop
        self._partial: dict[str, Any] | None = None  # progress through the current epoch, when saved mid-epoch
        self.recipe_callbacks = self._recipe_callbacks()
        self.callbacks = self.recipe_callbacks + list(callbacks or [])
        for callback in self.callbacks:
            callback.set_trainer(self)

    def _wrap(self) -> torch.nn.Module:
        """What train_step runs: the model, as DistributedDataParallel on several ranks, compiled if asked."""
        model = self.dist.wrap(self.model)
        return torch.compile(model) if self.config.compile else model

    def build_model(self) -> torch.nn.Module:
        """The network to train: the registered `config.model` (a subclass may build another, e.g. for transfer)."""
        return create_model(self.config.model, **self.model_kwargs)

    def _recipe_callbacks(self) -> list[Callback]:
        """ModelCheckpoint and EarlyStopping as the recipe asks, when there is a validation split to watch."""
        wanted = self.recipe.checkpoint_best or self.recipe.early_stopping
        if wanted and self.val_split is None:
            self.notes.append("no validation split (--val-size 0): checkpoint and early-stopping callbacks are off")
            return []
        return recipe_callbacks(self.recipe, self.files.kept_best(self.recipe.test_weights) if self.writes else None)

    def log(self, message: str) -> None:
        """Print a line between progress bars (nothing in quiet mode)."""
        if not self.config.quiet and self.dist.is_main:
            progress.write(message)

    def fit(self) -> History:
        """Train for the recipe's epochs, or until a callback stops the run.

        Returns:
            The History, whose `.history` maps 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'lr' and
            'seconds' to per-epoch values.
        """
        for note in self.notes:
            self.log(f"note: {note}")
        for callback in self.callbacks:
            callback.on_train_begin()
        self.stop_requests.announce = self.dist.is_main
        with self.stop_requests:
            while self._more_epochs():
                self.epoch += 1
                started = time.perf_counter() - (self._partial["seconds"] if self._partial else 0.0)
                logs = self._train_epoch()
                self.dist.broadcast_module(self.model)  # per-rank BatchNorm statistics: evaluate rank 0's
                if self.val_split is not None:
                    val = self.evaluate(self.val_split)
                    logs.update(val_loss=val.loss, val_accuracy=val.accuracy)
                logs.update(epoch=self.epoch, seconds=time.perf_counter() - started)
                self.history.append({**logs, **self._analysis()})  # callbacks below see `logs` alone
                if self.writes:
                    self.files.write_history(self.history)
                self.log(_epoch_line(self.epoch, self._planned(), logs))
                for callback in self.callbacks:
                    callback.on_epoch_end(self.epoch, logs)
                self._save_resume()
                self._stop_if_asked()
        if self.ema is not None:  # the run's final weights are the average (rank 0's, BatchNorm statistics too)
            self.dist.broadcast_(self.ema.state_dict()["average"])
            self.ema.copy_to(self.model)
        for callback in self.callbacks:
            callback.on_train_end()
        return self.history

    def _more_epochs(self) -> bool:
        """Whether to train another epoch: the recipe's epochs, or by the clock until its time is spent."""
        if self.stop_training:
            return False
        return self.epoch < self.recipe.epochs if self.clock is None else not self._time_is_up()

    def _time_is_up(self) -> bool:
        """Whether a run by the clock has spent its training time (the ranks agree)."""
        return self.clock is not None and bool(self.dist.max(int(self.clock.is_over())))

    def _planned(self) -> str:
        """The epochs shown beside the current one: the recipe's, or about so many for a run by the clock."""
        return f"~{self.recipe.epochs}" if self.clock is not None else str(self.recipe.epochs)

    def _analysis(self) -> dict[str, float]:
        """The test split's loss and accuracy after this epoch when `--test-each-epoch` asks, else nothing.

        For analysis only (e.g. replaying early-stopping readings): it goes to the history, never to the logs
        the callbacks read, and evaluating in eval mode draws no random numbers, so training is unchanged.
        """
        if not self.recipe.test_each_epoch:
            return {}
        test = self.evaluate(self.test_split, tta=self.recipe.tta)
        return {"test_loss": test.loss, "test_accuracy": test.accuracy}

    def _train_epoch(self) -> dict[str, float]:
        """One epoch of optimiser steps; returns the epoch's mean loss and accuracy and its peak lr.

        A state saved mid-epoch (`--save-every-steps`, or a stop asked by a signal) continues on the same batches.
        """
        self.model.train()
        low_res = self.epoch <= self.recipe.low_res_epochs
        self.train_loader.resize_to = self.low_res_size if low_res else None
        if self.recipe.whiten_bias_epochs:  # once frozen, no gradient has to reach the first layers' inputs
            trainable = self.epoch <= self.recipe.whiten_bias_epochs
            changed = self.model.whiten.bias.requires_grad != trainable
            self.model.whiten.bias.requires_grad_(trainable)
            if changed and self.dist.enabled:
                self.forward_model = self._wrap()  # DDP fixes the set of gradients it reduces when it is built
        partial, self._partial = self._partial, None
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        if partial is not None:
            loss_sum, correct = partial["loss_sum"].to(self.device), partial["correct"].to(self.device)
            seen, lr = partial["seen"], partial["lr"]
        started = time.perf_counter() - (partial["seconds"] if partial else 0.0)
        first = self.train_loader.indices.step + 1  # > 1 when resuming mid-epoch
        bar = progress.progress_bar(
            total=len(self.train_loader),
            initial=first - 1,
            desc=f"Epoch {self.epoch}/{self._planned()}",
            unit="step",
            leave=False,
            disable=self.config.quiet or not self.dist.is_main,
            dynamic_ncols=True,
        )
        every = self.config.save_every_steps
        if self.clock is not None:
            self.clock.mark()  # the clock counts from the first step and times each, validation left out
        for step, (inputs, labels) in enumerate(self.train_loader, start=first):
            loss, logits = self.train_step(inputs, labels)
            if self.clock is not None:
                self.clock.lap()
            loss_sum += loss * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += len(labels)
            batch_logs = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
            for callback in self.callbacks:
                callback.on_train_batch_end(step, batch_logs)
            bar.update(1)
            if step % LOG_EVERY_STEPS == 0 and not self.config.quiet and self.dist.is_main:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", accuracy=f"{correct.item() / seen:.4f}")
            stop = self.dist.max(self.stop_requests.signum or 0)  # the ranks agree on where to stop
            if self._time_is_up():
                break  # the training time is spent: the epoch ends here, and the run with it
            if step < len(self.train_loader) and (stop or (every and step % every == 0)):
                self._partial = {"loss_sum": loss_sum.detach().cpu(), "correct": correct.cpu(), "seen": seen,
                                 "lr": lr, "seconds": time.perf_counter() - started}  # fmt: skip
                self._save_resume()
                if stop:
                    raise TrainingStopped(stop)
                self._partial = None
        bar.close()
        totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, dtype=torch.float64,
                                                                                 device=self.device)])  # fmt: skip
        self.dist.all_reduce_sum([totals])  # the epoch's figures over every rank's share
        return {"loss": totals[0].item() / totals[2].item(), "accuracy": totals[1].item() / totals[2].item(), "lr": lr}

    def _save_resume(self) -> None:
        """Write resume.pt (rank 0); every rank takes part, since the state holds each rank's random streams."""
        if self.writes or self.dist.enabled:
            state = self.state_dict()
            if self.writes:
                self.files.write_resume(state)

    def _stop_if_asked(self) -> None:
        """Raise TrainingStopped when a signal asked any rank to stop (the state is saved by then)."""
        signum = self.dist.max(self.stop_requests.signum or 0)
        if signum:
            raise TrainingStopped(signum)

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch; returns the (detached) loss and logits, still on the device.

        Nothing here waits for the device (no `.item()`), so on a GPU the host queues the next batch meanwhile.
        """
        with autocast(self.device, self.precision):
            logits = self.forward_model(inputs)
        loss = training_loss(logits, labels, self.recipe)
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist.enabled:  # DDP averages the ranks' gradients: weigh each share so the step is the batch mean's
            (loss * (len(labels) * self.dist.world_size / self.train_loader.global_batch_size)).backward()
        else:
            loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return loss.detach(), logits.detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stands (see `training.resume`).

        That is the end of the last epoch, or a step inside the current one (`partial`). A distributed run also
        keeps every rank's own random streams (`ranks`); a collective: every rank must call it.
        """
        cuda = self.device.type == "cuda"
        own = {
            "loader": self.train_loader.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None},
        }
        return {
            "world_size": self.dist.world_size,
            "partial": self._partial,
            "ranks": self.dist.gather(own) if self.dist.enabled else None,
            "epoch": self.epoch - 1 if self._partial is not None else self.epoch,  # epochs complete
            "stop_training": self.stop_training,
            "history": self.history.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "callbacks": [callback.state_dict() for callback in self.recipe_callbacks],
            "clock": self.clock.state_dict() if self.clock is not None else None,
            **own,  # this rank's streams (rank 0's in a distributed run: `ranks` has them all)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` taken by a trainer built with the same config and data.

        Raises:
            ValueError: if the state does not fit this run (another model, or more epochs than the recipe has).
        """
        if state["epoch"] > self.recipe.epochs and self.clock is None:  # by the clock, epochs are a plan
            raise ValueError(f"the saved state is at epoch {state['epoch']}, past this recipe's {self.recipe.epochs}")
        world_size = int(state.get("world_size", 1))
        if world_size != self.dist.world_size:
            raise ValueError(f"the run trained as {world_size} process(es) and this is {self.dist.world_size}: resume "
                             f"it with as many (cifarlab train --resume RUN_DIR --nproc {world_size}, or "
                             "torchrun with as many processes in all)")  # fmt: skip
        load_state(self.model, state["model"], "the resume file")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        for callback, callback_state in zip(self.recipe_callbacks, state["callbacks"], strict=True):
            callback.load_state_dict(callback_state)
        own = state["ranks"][self.dist.rank] if self.dist.enabled else state  # this rank's random streams
        self.train_loader.load_state_dict(own["loader"])
        torch.set_rng_state(own["rng"]["torch"])
        cuda_rng = own["rng"]["cuda"]
        if self.device.type == "cuda" and cuda_rng is not None:
            if isinstance(cuda_rng, list):  # written before states were per device
                torch.cuda.set_rng_state_all(cuda_rng)
            else:
                torch.cuda.set_rng_state(cuda_rng, self.device)
        if self.clock is not None and state.get("clock") is not None:
            self.clock.load_state_dict(state["clock"])
        self._partial = state.get("partial")
        self.history.history = {key: list(values) for key, values in state["history"].items()}
        self.epoch = int(state["epoch"])
        self.stop_training = bool(state["stop_training"])

    def evaluate(self, split: Any, tta: int = 0, desc: str | None = None) -> EvalResult:
        """Loss, accuracy and confusion matrix of the current model on a split, with `tta` views (see TTA).

        With `desc`, a progress bar so named (unless quiet; rank 0 only). On several ranks each evaluates its
        shard of the split and the results are summed (a collective).
        """
        model = TTA(self.model if self.dist.enabled else self.forward_model, tta)  # DDP's forward is for training

        def run(part: Any) -> EvalResult:
            return evaluate_model(
                model,
                part.to(self.device),
                self.normalization,
                len(self.class_names),
                batch_size=self.recipe.eval_batch_size,
                precision=self.precision,
                channels_last=self.config.channels_last,
                desc=desc or "evaluate",
                progress=desc is not None and not self.config.quiet and self.dist.is_main,
            )

        return self.dist.evaluate(run, split, len(self.class_names)) if self.dist.enabled else run(split)

    def restore_best(self) -> int | None:
        """Load the best-val_accuracy weights a ModelCheckpoint kept, unless `train.test_weights` is 'last'.

        Returns that epoch, or None when the weights in memory stay (see `tested_epoch`).
        """
        if self.recipe.test_weights != "checkpoint":
            return None
        for callback in self.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.best_weights is not None:
                self.model.load_state_dict(callback.best_weights)
                return callback.best_epoch
        return None

    def tested_epoch(self) -> int | None:
        """The epoch whose weights the final test evaluates, after `restore_best` (None before any epoch)."""
        return tested_epoch(self.recipe_callbacks, self.recipe, self.epoch) if self.epoch else None

    def checkpoint_meta(self, metrics: dict[str, Any] | None = None, epoch: int | None = None) -> dict[str, Any]:
        """What a checkpoint records besides the weights: enough to rebuild, feed and name the model."""
        return {
            "preset": self.config.preset,
            "model": self.config.model,
            "model_kwargs": self.model_kwargs,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "normalization": self.normalization.to_dict(),
            "channels_last": self.config.channels_last,
            "tta": self.recipe.tta,
            "data_source": self.data_source,
            "data_dir": self.config.data.data_dir,
            "epoch": epoch if epoch is not None else self.epoch,
            "metrics": metrics or {},
            "cifarlab_version": __version__,
        }

    def save_model(self, path: str | Path, metrics: dict[str, Any] | None = None, epoch: int | None = None) -> Path:
        """Write the current weights and their metadata as a checkpoint (atomically; rank 0 only)."""
        if not self.dist.is_main:
            return Path(path)
        return save_checkpoint(path, self.model, self.checkpoint_meta(metrics, epoch))


def _epoch_line(epoch: int, epochs: str, logs: dict[str, float]) -> str:
    """The per-epoch summary line, Keras-like."""
    parts = [f"Epoch {epoch}/{epochs}", f"{logs['seconds']:.1f}s"]
    parts += [f"{key}: {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in logs]
    return " - ".join(parts)
