"""`cifarlab.tune()`: the whole search, from the options to best.toml, the re-run table and report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab import api
from cifarlab.data import Dataset
from cifarlab.tuning.rerun import Candidate, rerun, rerun_seeds, rerun_table, winner, write_best_toml
from cifarlab.tuning.search import open_study, prepare_search, run_workers, wait_seconds


@dataclass
class TuneResult:
    """What a search found: the study folder, the trials, the re-runs and the winner's best.toml."""

    study_dir: Path
    trials: list[Any]  # Optuna FrozenTrials, in number order
    candidates: list[Candidate]  # the re-run top trials, then the preset
    best: Candidate | None
    best_toml: Path | None
    table: str
    notes: list[str]


def tune(
    preset: str,
    *,
    space: str | Path | None = None,
    trials: int = 20,
    timeout: str | float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    study_dir: str | Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    top_k: int = 3,
    seeds: int = 3,
    pruner: str = "median",
    heartbeat_seconds: int | None = 60,
    quiet: bool = False,
    dataset: Dataset | None = None,
    **overrides: Any,
) -> TuneResult:
    """Search a preset's hyper-parameters with Optuna, re-run the best trials over seeds, and write best.toml.

    Args:
        preset: the preset searched (its family picks the built-in space: the seed's CNNs, or the fast recipes).
        space: a TOML file that changes the built-in space (ranges, choices, fixed values).
        trials: trials this call adds to the study (pruned ones count; failed ones are retried).
        timeout: stop starting trials after this long: seconds, or '90m', '2h', '1h30m'.
        workers: worker processes on this machine (more than one needs a journal or server storage).
        storage: 'sqlite:///PATH' (default: STUDY_DIR/study.db), 'journal:PATH' or 'postgresql://...'.
        study: the study's name (default: the preset's); workers and machines with the same name share it.
        study_dir: where trials, re-runs, best.toml and report.html go (default runs/tune/<study>).
        epochs: at most this many epochs per trial and re-run (a proxy budget; default: as the space samples).
        seed: the seed of the trials' data split and initialisation; the re-runs use the next `seeds` seeds.
        top_k: how many of the best trials to re-run (0: none, and no best.toml).
        seeds: seeds per re-run.
        pruner: 'median' (Optuna's MedianPruner), 'hyperband' or 'none'.
        heartbeat_seconds: database storages: a trial whose worker stopped beating this long (x2) is failed and
            retried, resuming its run.
        quiet: no progress bars or per-epoch lines.
        dataset: data already in memory (otherwise the data options say where to load it from).
        **overrides: data and machine options of the runs (`data=`, `val_size=`, `precision=`, ...).

    Raises:
        ValueError: for a bad option, space, storage or study folder (one line each), before anything trains.

    Example:
        >>> result = cifarlab.tune("fast88", trials=30, epochs=5, data="../shared/datasets/cifar10-jpeg")
        >>> print(result.table)
    """
    if trials < 0 or top_k < 0 or seeds < 1:
        raise ValueError("--trials and --top-k must be 0 or more and --rerun-seeds at least 1")
    seconds = wait_seconds(timeout) if isinstance(timeout, str) else timeout
    search, notes = prepare_search(preset, space=space, workers=workers, storage=storage, study=study,
                                   study_dir=study_dir, epochs=epochs, seed=seed, pruner=pruner,
                                   heartbeat_seconds=heartbeat_seconds, quiet=quiet, overrides=overrides)  # fmt: skip
    study_handle = open_study(search)
    finished = [t for t in study_handle.get_trials(deepcopy=False) if t.state.is_finished() and t.state.name != "FAIL"]
    data = dataset if dataset is not None else api.load_training_data(search.base_config)
    if trials:
        run_workers(search, len(finished) + trials, seconds, workers, data if workers == 1 else None)
    study_handle = open_study(search)
    done = sorted(study_handle.get_trials(deepcopy=True), key=lambda t: t.number)
    complete = sorted((t for t in done if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    if not complete and top_k:
        raise ValueError(f"study {search.study_name!r} has no completed trial yet (all pruned or failed); run more "
                         "--trials")  # fmt: skip
    candidates, best, best_toml, table = [], None, None, ""
    if top_k:
        candidates = rerun(search, complete[:top_k], rerun_seeds(search, seeds), data)
        best = winner(candidates)
        best_toml = write_best_toml(search, best)
        table = rerun_table(candidates, best)
    return TuneResult(Path(search.study_dir), done, candidates, best, best_toml, table, notes)
