"""The search's workers: processes that open the study and run trials until the budget is spoken for.

One worker runs in the calling process; `--workers N` starts N processes on this machine, and other machines may
join the same study with the same command. Each worker's sampler is unseeded (the operating system's entropy), so
no two of them, on one machine or many, draw the same start points, and TPE runs with the constant liar: a running
trial counts as a poor result, so parallel workers do not all sample near the same promising point.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

import torch

from cifarlab import api
from cifarlab._io.locks import waiting_lock
from cifarlab.data import Dataset
from cifarlab.data.dataset import without_test
from cifarlab.training.cost import data_sizes
from cifarlab.tuning.search import Search, opened_study, run_trial
from cifarlab.tuning.storage import retry_trial

FAILURES_IN_A_ROW = 5  # a worker whose last trials all failed stops: the error is the options', not one point's
ORPHANS_LOCK_SUFFIX = ".orphans.lock"  # beside a journal file: one worker at a time fails its orphaned trials


def run_workers(search: Search, target: int, timeout: float | None, workers: int, dataset: Dataset | None) -> None:
    """Run trials until the study holds `target` finished ones (or `timeout` seconds pass), on `workers` processes.

    `dataset` (data in memory) is for one worker only: worker processes load the data from the data options.

    Raises:
        RuntimeError: if a worker process failed.
    """
    if workers == 1:
        _work(search, 0, 1, target, timeout, dataset)
        return
    assert dataset is None, "worker processes load their data themselves (tune refuses dataset= with workers)"
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
    with opened_study(search) as study:
        if search.storage.kind == "journal":
            fail_orphaned_trials(study, search.storage.target)
        if target - len(finished_trials(study)) <= 0:
            return
        data = dataset if dataset is not None else api.load_training_data(search.base_config)
        trial_data = without_test(data)
        sizes = data_sizes(search.base_config, data) if search.frontier else None  # the cost counts its test split
        failures = StopAfterFailures(FAILURES_IN_A_ROW)
        # running trials count too, so workers stop starting trials as soon as the budget is spoken for
        budget = optuna.study.MaxTrialsCallback(target, states=(*_finished_states(), TrialState.RUNNING))
        study.optimize(
            lambda trial: run_trial(search, trial, trial_data, sizes),
            timeout=timeout,
            callbacks=[budget, failures],
            catch=(ValueError,),  # a point the network or the device cannot take fails that trial, not the search
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


def finished_trials(study: Any) -> list[Any]:
    """The study's complete and pruned trials (failed ones are retried, so they do not count)."""
    return study.get_trials(deepcopy=False, states=_finished_states())


def _finished_states() -> tuple[Any, ...]:
    import optuna

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def fail_orphaned_trials(study: Any, journal: str | Path) -> list[int]:
    """Journal storage has no heartbeat: fail the running trials whose worker on this machine is gone, and retry them.

    Workers that start together take turns (a lock file beside the journal), and each reads the running trials
    only once it holds the lock: an orphan is failed, and retried, once.

    Returns:
        The numbers of the trials failed (each is enqueued again with `retry_of`, and resumes its run).
    """
    import optuna

    host, failed = socket.gethostname(), []
    with waiting_lock(f"{journal}{ORPHANS_LOCK_SUFFIX}"):
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
            if worker_host != host or not pid.isdigit() or _alive(int(pid)):
                continue
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
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
