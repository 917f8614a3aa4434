"""`cifarlab tune`: search a preset's hyper-parameters with Optuna on validation data, then re-run the best.

Each trial is an ordinary run directory under `STUDY_DIR/trials/trial-NNNN` that reports its validation accuracy
every epoch; Optuna's pruner stops the hopeless ones, and a trial never reads the test split (its dataset has an
empty one). The study lives in a storage (see `storage`); running the same command again adds trials to it, and
`workers` runs the trials. `rerun` then trains the best trials again over new seeds, with the test split, against
the preset itself. A `--frontier` study scores each trial on its cost as well (`objectives`), and prunes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab import api
from cifarlab._io.atomic import write_json
from cifarlab.config import RunConfig, apply_overrides, config_from_dict
from cifarlab.data import Dataset
from cifarlab.data.dataset import select_classes, with_validation
from cifarlab.training.callbacks import Callback
from cifarlab.training.cost import DataSizes, recipe_cost
from cifarlab.training.history import History
from cifarlab.training.run_dir import HISTORY_NAME, METRICS_NAME
from cifarlab.tuning.objectives import directions, objectives
from cifarlab.tuning.space import Space, cap_epochs, config_overrides, family_of, load_space
from cifarlab.tuning.storage import StorageSpec, resolve_storage

STUDY_RECORD = "study.json"  # what the study searches; a continued study must search the same
TRIALS_DIR = "trials"
PRUNERS = ("median", "hyperband", "none")
HOLD_OUT = 0.1  # validation fraction for a preset that trains on all its images (the fast recipes)
BN_PROXY_STEPS = 1000  # fewer steps leave a Keras BatchNorm's moving variance carrying its starting 1 (0.99**t)
SCHEDULE_PARAMETERS = ("epochs", "low_res_epochs")  # searched, they make trials' epochs incomparable for a pruner


@dataclass(frozen=True)
class Search:
    """Everything a worker needs to run trials (plain values, so worker processes can receive it)."""

    preset: str
    base: dict[str, Any]  # the searched preset's RunConfig, data options and hold-out applied, as to_dict()
    space_file: str | None
    family: str
    epochs_cap: int | None
    study_name: str
    study_dir: str
    storage: StorageSpec
    heartbeat_seconds: int | None
    pruner: str
    seed: int
    quiet: bool
    frontier: bool = False  # two objectives: validation accuracy up, the recipe's TFLOPs down

    @property
    def base_config(self) -> RunConfig:
        """The searched preset's config."""
        return config_from_dict(self.base)

    @property
    def space(self) -> Space:
        """The space sampled: built in, changed by the space file, its epochs held within `--epochs`."""
        return cap_epochs(load_space(self.family, self.space_file), self.epochs_cap)

    def trial_overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """The run-config overrides (dotted keys) of one point of the space over the preset, epochs capped."""
        base = self.base_config
        overrides = config_overrides(values, base)
        train = apply_overrides(base, overrides).train
        if self.epochs_cap is not None and train.epochs > self.epochs_cap:
            low_res = min(train.low_res_epochs, self.epochs_cap - 1)
            overrides.update({"train.epochs": self.epochs_cap, "train.low_res_epochs": low_res,
                              "train.low_res_size": train.low_res_size if low_res else 0})  # fmt: skip
        return overrides

    def trial_config(self, values: dict[str, Any], run_dir: Path | None, seed: int | None = None) -> RunConfig:
        """The run config of one point of the space (epochs capped by `--epochs`)."""
        config = apply_overrides(self.base_config, self.trial_overrides(values))
        out = None if run_dir is None else str(run_dir)
        return dataclasses.replace(config, out=out, seed=self.seed if seed is None else seed)

    def record(self) -> dict[str, Any]:
        """What study.json holds: what is searched, on which data, for how long per trial."""
        space = {name: param.describe() for name, param in load_space(self.family, self.space_file).items()}
        return {"preset": self.preset, "family": self.family, "space": space, "epochs_cap": self.epochs_cap,
                "data": self.base["data"], "seed": self.seed, "study": self.study_name,
                "objectives": objectives(self.frontier)}  # fmt: skip


def short_proxy_note(search: Search, dataset: Dataset) -> str | None:
    """A warning when trials are too short for the seed CNNs' BatchNorm statistics to be right, else None.

    Keras' BatchNormalization, which the seed's steps use, starts its moving variance at 1 and moves it 1 % a step
    (momentum 0.99). On pixels / 255 the first block's features vary by 1e-3 or less, so for the first thousand
    steps or so inference divides by a variance many times too large, and a trial with BatchNorm validates far
    below what its weights do (near chance at a few hundred steps). The shortest trials count: the largest batch.
    """
    bn = search.space.get("bn")
    if search.family != "seed" or bn is None or True not in (bn.choices or ()):
        return None
    base = search.base_config
    batch_param = search.space.get("batch_size")
    batches = batch_param.choices if batch_param is not None and batch_param.choices else (base.train.batch_size,)
    batch = max(int(b) for b in batches)
    train = search.trial_config({"batch_size": batch}, None).train  # epochs capped, a fixed step count rescaled
    if train.steps_per_epoch is not None:
        per_epoch = train.steps_per_epoch
    else:  # the trainer's own selection and hold-out
        try:
            data = select_classes(dataset, base.data.classes, base.data.per_class_limit, search.seed)
            per_epoch = -(-len(with_validation(data, base.data.val_size, search.seed).train) // batch)
        except ValueError:  # options no trial can train with: the trials fail and say why (StopAfterFailures)
            return None
    epochs = train.epochs
    steps = per_epoch * epochs
    if steps >= BN_PROXY_STEPS:
        return None
    span = f"{epochs} epoch{'s' if epochs != 1 else ''} of {per_epoch} at batch {batch}"
    return (f"trials with BatchNorm may train only {steps} steps ({span}), "
            f"when Keras BatchNorm's moving variance still holds {0.99**steps:.2g} of its starting 1, more than the "
            "first features' own variance: such trials validate far below what their weights do (near chance under "
            f"about 500 steps); give {BN_PROXY_STEPS:,} steps or more (--epochs, --per-class-limit, smaller batches) "
            "or fix bn in --space (docs/tune.md, 'Proxies and BatchNorm')")  # fmt: skip


def prepare_search(
    preset: str,
    *,
    space: str | Path | None,
    workers: int,
    storage: str | None,
    study: str | None,
    study_dir: str | Path | None,
    epochs: int | None,
    seed: int,
    pruner: str,
    heartbeat_seconds: int | None,
    quiet: bool,
    overrides: dict[str, Any],
    frontier: bool = False,
) -> tuple[Search, list[str]]:
    """Check every option and resolve the search, before anything trains; returns it and notes for the user.

    Raises:
        ValueError: for a bad option (one line, naming it), or a study folder that searched something else.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    if pruner not in PRUNERS:
        raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}; got {pruner!r}")
    base = api.resolve_config(preset, seed=seed, quiet=quiet, **overrides)
    family = family_of(base)
    searched = schedule_searched(cap_epochs(load_space(family, space), epochs))  # a bad space file fails now
    notes = []
    if base.data.val_size == 0:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, val_size=HOLD_OUT))
        notes.append(f"{preset} trains on every training image; the search holds out {HOLD_OUT:.0%} of them as its "
                     "validation split (trials and re-runs alike)")  # fmt: skip
    if frontier and pruner != "none":
        notes.append(frontier_pruning_note(pruner))
        pruner = "none"
    if searched and pruner != "none":
        notes.append(pruning_off_note(searched, pruner))
        pruner = "none"
    name = study or preset
    folder = Path(study_dir) if study_dir is not None else Path("runs") / "tune" / name
    spec = resolve_storage(storage, folder, workers)
    search = Search(preset, base.to_dict(), None if space is None else str(space), family, epochs, name,
                    str(folder), spec, heartbeat_seconds, pruner, seed, quiet, frontier)  # fmt: skip
    _check_study_record(search)
    return search, notes


def schedule_searched(space: Space) -> list[str]:
    """The parameters of a trial's schedule length (epochs, low-resolution epochs) that the space varies."""
    return [name for name in SCHEDULE_PARAMETERS
            if name in space and (space[name].choices is None or len(space[name].choices) > 1)]  # fmt: skip


def pruning_off_note(searched: list[str], pruner: str) -> str:
    """Why a search whose schedule length varies runs without its pruner (a note in the report)."""
    return (f"pruning is off (--pruner {pruner} not applied): the space searches {' and '.join(searched)}, so trials "
            "run schedules of different lengths, and a pruner comparing them epoch by epoch would judge a long "
            "trial's early epochs (still warming up, or at low resolution) against short trials' last ones and stop "
            f"the long ones; fix {' and '.join(searched)} in --space to prune")  # fmt: skip


def frontier_pruning_note(pruner: str) -> str:
    """Why a --frontier study runs without its pruner (a note in the report)."""
    return (
        f"pruning is off (--pruner {pruner} not applied): a --frontier study has two objectives, validation "
        "accuracy and cost, and Optuna prunes single-objective studies only; every trial runs to its end"
    )


def _check_study_record(search: Search) -> None:
    """Write study.json, or check that the study in the folder searched the same things."""
    path = Path(search.study_dir) / STUDY_RECORD
    record = json.loads(json.dumps(search.record()))
    if path.is_file():
        before = json.loads(path.read_text())
        before.setdefault("objectives", objectives(False))  # recorded before --frontier: one objective
        if before["objectives"] != record["objectives"]:
            mode = ("a study of validation accuracy alone: continue it without --frontier" if search.frontier
                    else "a --frontier study (accuracy against cost): continue it with --frontier")  # fmt: skip
            raise ValueError(f"--study-dir {search.study_dir} holds {mode}, or give another --study-dir "
                             f"({STUDY_RECORD} records its objectives)")  # fmt: skip
        changed = [key for key in record if before.get(key) != record[key]]
        if changed:
            raise ValueError(f"--study-dir {search.study_dir} holds a study that searched another {', '.join(changed)}"
                             f" ({STUDY_RECORD}); give another --study-dir or the same options")  # fmt: skip
        return
    write_json(path, record)


@contextlib.contextmanager
def opened_study(search: Search) -> Iterator[Any]:
    """The study (created on first use), with its sampler and pruner; its storage is closed after the block.

    The TPE sampler is unseeded, so each process draws from the operating system's entropy: workers, commands and
    machines joining one study never repeat each other's start points. Where several processes may share the
    study (journal and server storages) it runs with the constant liar, so they do not crowd the same point.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = search.storage.open(search.heartbeat_seconds)
    try:
        with warnings.catch_warnings():  # the constant liar is 'experimental' in Optuna 4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(constant_liar=search.storage.kind != "sqlite")  # multi-objective too
        yield optuna.create_study(study_name=search.study_name, storage=storage, directions=directions(search.frontier),
                                  load_if_exists=True, sampler=sampler, pruner=_pruner(search.pruner))  # fmt: skip
    finally:
        search.storage.close(storage)


def _pruner(name: str) -> Any:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)


def trial_dir(search: Search, number: int) -> Path:
    """Where trial `number` trains."""
    return Path(search.study_dir) / TRIALS_DIR / f"trial-{number:04d}"


def original_number(trial: Any) -> int:
    """The trial whose run a retry continues (see `retry_trial`), or the trial itself."""
    return int(trial.user_attrs.get("retry_of", trial.number))


def run_trial(
    search: Search, trial: Any, dataset: Dataset, sizes: DataSizes | None = None
) -> float | tuple[float, float]:
    """Train one trial (or resume the run of the trial it retries); its final model's validation accuracy.

    In a --frontier study (`sizes`: the splits of the data as loaded, its test split included), the trial returns
    its validation accuracy and its recipe's cost in TFLOPs, and keeps both costs in its user attributes
    ('flops': the RunCost, 'train_seconds': metrics.json's); it is never pruned.

    Raises:
        optuna.TrialPruned: when the pruner stopped it (its run is saved, stopped at that epoch).
    """
    import optuna

    values = {name: param.suggest(trial) for name, param in search.space.items()}
    run_dir = trial_dir(search, original_number(trial))
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    pruning = PruneOnValAccuracy(trial)
    forget_compiled_kernels()
    # a retried trial resumes its run, keeps it when its worker died after the run was saved, or starts it again
    # (refused in one line while its first worker still trains it: finish_run deletes under the run's lock)
    try:
        config = search.trial_config(values, run_dir)
        api.finish_run(config, dataset=dataset, callbacks=[] if search.frontier else [pruning], quiet=search.quiet,
                       test=False)  # fmt: skip
    except ValueError as error:
        trial.set_user_attr("error", str(error))  # for StopAfterFailures' message
        raise
    except torch.cuda.OutOfMemoryError:
        pass  # failed below, once this frame no longer holds the exception and the run's tensors its traceback keeps
    else:
        value = final_val_accuracy(run_dir)
        if search.frontier:
            assert sizes is not None, "a --frontier trial needs the data's sizes for its cost"
            cost = recipe_cost(config, sizes)
            trial.set_user_attr("flops", cost.to_dict())
            trial.set_user_attr("train_seconds", _metrics(run_dir).get("train_seconds"))
            trial.set_user_attr("val_curve", val_curve(run_dir))  # what a pruner would have seen, for the report
            return value, cost.total / 1e12
        if pruning.stop_message or _stopped_by_pruner(run_dir):
            raise optuna.TrialPruned(pruning.stop_message or "pruned")
        return value
    release_device_memory()
    shown = ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                      for name, value in values.items())  # fmt: skip
    message = f"CUDA ran out of memory at {shown}: this trial failed, the search goes on"
    trial.set_user_attr("error", message)
    raise ValueError(message)  # the worker's catch: one trial fails, not the worker


def release_device_memory() -> None:
    """Return a failed trial's CUDA memory to the device, so that the next trial starts with all of it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def forget_compiled_kernels() -> None:
    """Empty torch.compile's caches before a run of a search: each trial and re-run brings new layer shapes.

    One process trains many geometries (widths, stages, batch sizes, each batch's last partial one); past dynamo's
    recompile limit the models' compiled kernels (the seed CNNs' pooling and Dropout chain) would run eagerly for
    the rest of the search. A fresh cache recompiles them in seconds.
    """
    torch._dynamo.reset()


def _metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS_NAME).read_text())


def val_curve(run_dir: Path) -> list[list[float]]:
    """A finished run's validation accuracy after each epoch (history.csv), as [epoch, accuracy] pairs."""
    history = History.from_csv(run_dir / HISTORY_NAME).history
    return [[int(e), float(v)] for e, v in zip(history["epoch"], history["val_accuracy"]) if v == v]


def final_val_accuracy(run_dir: Path) -> float:
    """The validation accuracy of a finished run's final model (metrics.json's `final_val`)."""
    metrics = _metrics(run_dir)
    final = metrics.get("final_val") or {}
    if final.get("accuracy") is None:
        raise ValueError(f"{run_dir} has no validation accuracy (was it trained with a validation split?)")
    return float(final["accuracy"])


def _stopped_by_pruner(run_dir: Path) -> bool:
    metrics = _metrics(run_dir)
    return str(metrics.get("stopped", "")).startswith("pruned by the search")


class PruneOnValAccuracy(Callback):
    """Report val_accuracy to the trial every epoch; stop the run when the pruner says it is hopeless."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.stop_message: str | None = None

    def on_train_begin(self) -> None:
        """A resumed run reports its earlier epochs first, so the pruner sees the whole curve."""
        h = self.trainer.history.history
        for epoch, value in zip(h.get("epoch", []), h.get("val_accuracy", [])):
            if value == value:
                self.trial.report(float(value), int(epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Report, and stop the run if the pruner asks."""
        value = logs.get("val_accuracy")
        if value is None or math.isnan(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.stop_message = (f"pruned by the search at epoch {epoch}: val_accuracy {value:.4f} is below what "
                                 "the pruner expects of a trial at that epoch")  # fmt: skip
            self.trainer.stop_training = True
