"""`cifarlab tune`: search a preset's hyper-parameters with Optuna on validation data, then re-run the best.

Each trial is an ordinary run directory under `STUDY_DIR/trials/trial-NNNN` that reports its validation accuracy
every epoch; Optuna's pruner stops the hopeless ones, and a trial never reads the test split (its dataset has an
empty one). The study lives in a storage (see `storage`); running the same command again adds trials to it.
`rerun` then trains the best trials again over new seeds, with the test split, against the preset itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab import api
from cifarlab._io.atomic import write_json
from cifarlab.config import RunConfig, apply_overrides, config_from_dict
from cifarlab.data import Dataset
from cifarlab.data.dataset import select_classes, with_validation, without_test
from cifarlab.training.callbacks import Callback
from cifarlab.training.run_dir import METRICS_NAME
from cifarlab.tuning.space import Space, cap_epochs, config_overrides, family_of, load_space
from cifarlab.tuning.storage import StorageSpec, resolve_storage, retry_trial

STUDY_RECORD = "study.json"  # what the study searches; a continued study must search the same
TRIALS_DIR = "trials"
PRUNERS = ("median", "hyperband", "none")
HOLD_OUT = 0.1  # validation fraction for a preset that trains on all its images (the fast recipes)
BN_PROXY_STEPS = 1000  # fewer steps leave a Keras BatchNorm's moving variance carrying its starting 1 (0.99**t)
FAILURES_IN_A_ROW = 5  # a worker whose last trials all failed stops: the error is the options', not one point's


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

    @property
    def base_config(self) -> RunConfig:
        """The searched preset's config."""
        return config_from_dict(self.base)

    @property
    def space(self) -> Space:
        """The space sampled: built in, changed by the space file, its epochs held within `--epochs`."""
        return cap_epochs(load_space(self.family, self.space_file), self.epochs_cap)

    def trial_config(self, values: dict[str, Any], run_dir: Path | None, seed: int | None = None) -> RunConfig:
        """The run config of one point of the space (epochs capped by `--epochs`)."""
        base = self.base_config
        config = apply_overrides(base, config_overrides(values, base))
        if self.epochs_cap is not None and config.train.epochs > self.epochs_cap:
            low_res = min(config.train.low_res_epochs, self.epochs_cap - 1)
            train = dataclasses.replace(config.train, epochs=self.epochs_cap, low_res_epochs=low_res,
                                        low_res_size=config.train.low_res_size if low_res else 0)  # fmt: skip
            config = dataclasses.replace(config, train=train)
        out = None if run_dir is None else str(run_dir)
        return dataclasses.replace(config, out=out, seed=self.seed if seed is None else seed)

    def record(self) -> dict[str, Any]:
        """What study.json holds: what is searched, on which data, for how long per trial."""
        space = {name: param.describe() for name, param in load_space(self.family, self.space_file).items()}
        return {"preset": self.preset, "family": self.family, "space": space, "epochs_cap": self.epochs_cap,
                "data": self.base["data"], "seed": self.seed, "study": self.study_name}  # fmt: skip


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
    load_space(family, space)  # a bad space file fails now
    notes = []
    if base.data.val_size == 0:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, val_size=HOLD_OUT))
        notes.append(f"{preset} trains on every training image; the search holds out {HOLD_OUT:.0%} of them as its "
                     "validation split (trials and re-runs alike)")  # fmt: skip
    name = study or preset
    folder = Path(study_dir) if study_dir is not None else Path("runs") / "tune" / name
    spec = resolve_storage(storage, folder, workers)
    search = Search(preset, base.to_dict(), None if space is None else str(space), family, epochs, name,
                    str(folder), spec, heartbeat_seconds, pruner, seed, quiet)  # fmt: skip
    _check_study_record(search)
    return search, notes


def _check_study_record(search: Search) -> None:
    """Write study.json, or check that the study in the folder searched the same things."""
    path = Path(search.study_dir) / STUDY_RECORD
    record = json.loads(json.dumps(search.record()))
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [key for key in record if before.get(key) != record[key]]
        if changed:
            raise ValueError(f"--study-dir {search.study_dir} holds a study that searched another {', '.join(changed)}"
                             f" ({STUDY_RECORD}); give another --study-dir or the same options")  # fmt: skip
        return
    write_json(path, record)


def open_study(search: Search, sampler_seed: int | None = None) -> Any:
    """The study (created on first use), with its sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = search.storage.open(search.heartbeat_seconds)
    return optuna.create_study(
        study_name=search.study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=_pruner(search.pruner),
    )  # fmt: skip


def _pruner(name: str) -> Any:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)


def run_workers(search: Search, target: int, timeout: float | None, workers: int, dataset: Dataset | None) -> None:
    """Run trials until the study holds `target` finished ones (or `timeout` seconds pass), on `workers` processes.

    Raises:
        RuntimeError: if a worker process failed.
    """
    if workers == 1:
        _work(search, 0, 1, target, timeout, dataset)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_work, args=(search, index, workers, target, timeout, None))
                 for index in range(workers)]  # fmt: skip
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    failed = [f"worker {i} (exit {p.exitcode})" for i, p in enumerate(processes) if p.exitcode]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed; run the same command again to continue the study")


def _work(
    search: Search, index: int, workers: int, target: int, timeout: float | None, dataset: Dataset | None
) -> None:
    """Worker `index` of `workers`: open the study and run trials until it holds `target` finished ones."""
    import optuna
    from optuna.trial import TrialState

    if workers > 1:  # the machine's cores, shared between the workers
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    # a different sampler seed per worker and per continuation, so no two draw the same random start points
    study = open_study(search, sampler_seed=search.seed * 1000 + index + 7 * len(_finished(study_or_none(search))))
    if search.storage.kind == "journal":
        fail_orphaned_trials(study)
    data = dataset if dataset is not None else api.load_training_data(search.base_config)
    trial_data = without_test(data)
    remaining = target - len(_finished(study))
    if remaining <= 0:
        return
    failures = StopAfterFailures(FAILURES_IN_A_ROW)
    study.optimize(
        lambda trial: run_trial(search, trial, trial_data),
        timeout=timeout,
        # running trials count too, so workers stop starting trials as soon as the budget is spoken for
        callbacks=[optuna.study.MaxTrialsCallback(target, states=(*_finished_states(), TrialState.RUNNING)), failures],
        catch=(ValueError,),  # a point of the space the network cannot take fails that trial, not the search
    )
    if failures.stopped:
        raise ValueError(f"{failures.limit} trials in a row failed, the last with: {failures.error}")


class StopAfterFailures:
    """An Optuna callback that stops the worker after `limit` failed trials in a row.

    One point of the space the network cannot take fails its trial and the search goes on; but failures don't
    count towards the trial budget, so an error every trial meets (options that leave no training images, say)
    would otherwise start failing trials for ever.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row, self.error = limit, 0, ""

    @property
    def stopped(self) -> bool:
        """Whether the worker stopped for failures."""
        return self.in_a_row >= self.limit

    def __call__(self, study: Any, trial: Any) -> None:  # noqa: D102
        if trial.state.name != "FAIL":
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.error = trial.user_attrs.get("error", "see the log above")
        if self.stopped:
            study.stop()


def study_or_none(search: Search) -> Any:
    """The study if it exists yet (for counting), else None."""
    import optuna

    try:
        return optuna.load_study(study_name=search.study_name, storage=search.storage.open())
    except KeyError:
        return None


def _finished(study: Any) -> list[Any]:
    if study is None:
        return []
    return study.get_trials(deepcopy=False, states=_finished_states())


def _finished_states() -> tuple[Any, ...]:
    import optuna

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def trial_dir(search: Search, number: int) -> Path:
    """Where trial `number` trains."""
    return Path(search.study_dir) / TRIALS_DIR / f"trial-{number:04d}"


def original_number(trial: Any) -> int:
    """The trial whose run a retry continues (see `retry_trial`), or the trial itself."""
    return int(trial.user_attrs.get("retry_of", trial.number))


def run_trial(search: Search, trial: Any, dataset: Dataset) -> float:
    """Train one trial (or resume the run of the trial it retries); its final model's validation accuracy.

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
    # a retried trial resumes its run, or keeps it when its worker died after the run was saved
    try:
        api.finish_run(search.trial_config(values, run_dir), dataset=dataset, callbacks=[pruning],
                       quiet=search.quiet, test=False)  # fmt: skip
    except ValueError as error:
        trial.set_user_attr("error", str(error))  # for StopAfterFailures' message
        raise
    value = final_val_accuracy(run_dir)
    if pruning.stop_message or _stopped_by_pruner(run_dir):
        raise optuna.TrialPruned(pruning.stop_message or "pruned")
    return value


def forget_compiled_kernels() -> None:
    """Empty torch.compile's caches before a run of a search: each trial and re-run brings new layer shapes.

    One process trains many geometries (widths, stages, batch sizes, each batch's last partial one); past dynamo's
    recompile limit the models' compiled kernels (the seed CNNs' pooling and Dropout chain) would run eagerly for
    the rest of the search. A fresh cache recompiles them in seconds.
    """
    torch._dynamo.reset()


def final_val_accuracy(run_dir: Path) -> float:
    """The validation accuracy of a finished run's final model (metrics.json's `final_val`)."""
    metrics = json.loads((run_dir / METRICS_NAME).read_text())
    final = metrics.get("final_val") or {}
    if final.get("accuracy") is None:
        raise ValueError(f"{run_dir} has no validation accuracy (was it trained with a validation split?)")
    return float(final["accuracy"])


def _stopped_by_pruner(run_dir: Path) -> bool:
    metrics = json.loads((run_dir / METRICS_NAME).read_text())
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


def fail_orphaned_trials(study: Any) -> list[int]:
    """Journal storage has no heartbeat: fail the running trials whose worker on this machine is gone, and retry them.

    Returns:
        The numbers of the trials failed (each is enqueued again with `retry_of`, and resumes its run).
    """
    import optuna

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        retry_trial(study, trial)
        failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_seconds(text: str | None) -> float | None:
    """`--timeout` in seconds: '90m', '2h', '45s', '1h30m' or a plain number of seconds.

    Raises:
        ValueError: for anything else, naming the value.
    """
    if text is None:
        return None
    import re

    total, rest = 0.0, text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", rest)
    if not parts or "".join(n + u for n, u in parts) != rest:
        raise ValueError(f"--timeout {text!r}: give a duration such as 90m, 2h, 1h30m or 600 (seconds)")
    for number, unit in parts:
        total += float(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total
