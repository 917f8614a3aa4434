"""`cifarlab.tune()`: the whole search, from the options to best.toml (or front.json), the re-runs and report.html."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab import api
from cifarlab._io.durations import parse_duration
from cifarlab.data import Dataset
from cifarlab.reports.study_report import STUDY_REPORT, RerunRow, StudyFacts, TrialFacts, write_study_report
from cifarlab.training.cost import RunCost
from cifarlab.tuning.frontier import front_table, front_trials, measured_device, rerun_front, spread, write_front
from cifarlab.tuning.rerun import Candidate, rerun, rerun_seeds, rerun_table, winner, write_best_toml
from cifarlab.tuning.search import Search, opened_study, prepare_search, short_proxy_note
from cifarlab.tuning.workers import finished_trials, run_workers


@dataclass
class TuneResult:
    """What a search found: the study folder, the trials, the re-runs and the winner's best.toml (or front.json)."""

    study_dir: Path
    trials: list[Any]  # Optuna FrozenTrials, in number order
    candidates: list[Candidate]  # the re-run top trials (--frontier: the front's points, cheapest first), the preset
    best: Candidate | None  # None in a --frontier study: the front is the answer
    best_toml: Path | None
    table: str
    notes: list[str]
    report: Path  # STUDY_DIR/report.html
    front_json: Path | None = None  # --frontier: STUDY_DIR/front.json
    front: list[int] = field(default_factory=list)  # --frontier: the front's trial numbers, cheapest first

    def _repr_html_(self) -> str:
        """A notebook's card: the winner's test accuracy over seeds, the re-runs, the search's history."""
        from cifarlab.display.html import study_html

        return study_html(self)

    def plot(self) -> Any:
        """The search's history as a matplotlib Figure (each trial's validation accuracy and the best so far)."""
        from cifarlab.display.figures import study_figure

        return study_figure(self.trials)


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
    top_k: int | None = None,
    seeds: int = 3,
    pruner: str = "median",
    heartbeat_seconds: int | None = 60,
    quiet: bool = False,
    dataset: Dataset | None = None,
    frontier: bool = False,
    **overrides: Any,
) -> TuneResult:
    """Search a preset's hyper-parameters with Optuna, re-run the best trials over seeds, and write best.toml.

    With `frontier`, search accuracy against cost instead: two objectives (validation accuracy up, the recipe's
    TFLOPs down), no pruning, and the Pareto front's points re-run and written to STUDY_DIR/front.json (no
    best.toml: the front is the answer).

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
        top_k: how many of the best trials to re-run (0: none, and no best.toml); default 3. With `frontier`: at
            most this many front points, spread along the cost axis (cheapest and most accurate kept); default all.
        seeds: seeds per re-run.
        pruner: 'median' (Optuna's MedianPruner), 'hyperband' or 'none'.
        heartbeat_seconds: database storages: a trial whose worker stopped beating this long (x2) is failed and
            retried, resuming its run.
        quiet: no progress bars or per-epoch lines.
        dataset: data already in memory (otherwise the data options say where to load it from); one worker only,
            since worker processes load their data from the data options.
        frontier: a multi-objective study of accuracy against cost (see `cifarlab.tuning.frontier`).
        **overrides: data and machine options of the runs (`data=`, `val_size=`, `precision=`, ...).

    Raises:
        ValueError: for a bad option, space, storage or study folder, or `dataset` with several workers (one line
            each), before anything trains.

    Example:
        >>> result = cifarlab.tune("fast88", trials=30, epochs=5, data="../shared/datasets/cifar10-jpeg")
        >>> print(result.table)
    """
    import optuna  # noqa: F401  (the tune extra: missing, it ends here in one line, before anything is written)

    if trials < 0 or (top_k is not None and top_k < 0) or seeds < 1:
        raise ValueError("--trials and --top-k must be 0 or more and --rerun-seeds at least 1")
    if dataset is not None and workers > 1:
        raise ValueError(f"--workers {workers} with data given in memory (dataset=): worker processes load their "
                         "data from the data options; give its folder as data=PATH, or use workers=1")  # fmt: skip
    seconds = parse_duration(timeout, "--timeout") if isinstance(timeout, str) else timeout
    search, notes = prepare_search(preset, space=space, workers=workers, storage=storage, study=study,
                                   study_dir=study_dir, epochs=epochs, seed=seed, pruner=pruner,
                                   heartbeat_seconds=heartbeat_seconds, quiet=quiet, overrides=overrides,
                                   frontier=frontier)  # fmt: skip
    with opened_study(search) as study_handle:
        finished = len(finished_trials(study_handle))
    data = dataset if dataset is not None else api.load_training_data(search.base_config)
    proxy_note = short_proxy_note(search, data)
    if proxy_note is not None:
        notes.append(proxy_note)
    if trials:
        if proxy_note is not None:
            warnings.warn(proxy_note, stacklevel=2)
        run_workers(search, finished + trials, seconds, workers, data if workers == 1 else None)
    with opened_study(search) as study_handle:
        done = sorted(study_handle.get_trials(deepcopy=True), key=lambda t: t.number)
        importances = _importances(study_handle, sum(t.state.name == "COMPLETE" for t in done), frontier)
        front = front_trials(study_handle) if frontier else []
    complete = sorted((t for t in done if t.state.name == "COMPLETE"), key=lambda t: -t.values[0])
    candidates, costs, best, best_toml, front_json, table = [], [], None, None, None, ""
    if frontier:
        chosen, seed_list = spread(front, top_k), rerun_seeds(search, seeds)
        if chosen:
            candidates, costs, sizes = rerun_front(search, chosen, seed_list, data)
            front_json = write_front(search, candidates, costs, sizes, seed_list)
            table = front_table(candidates, costs, len(front))
    elif complete and (top_k is None or top_k):
        candidates = rerun(search, complete[: 3 if top_k is None else top_k], rerun_seeds(search, seeds), data)
        best = winner(candidates)
        best_toml = write_best_toml(search, best)
        table = rerun_table(candidates, best)
    facts = study_facts(search, importances, done, candidates, best, best_toml, table, notes,
                        [t.number for t in front], costs, front_json)  # fmt: skip
    report = write_study_report(Path(search.study_dir) / STUDY_REPORT, facts)  # all pruned or failed: shows why
    if not complete and top_k != 0:
        raise ValueError(f"study {search.study_name!r} has no completed trial yet (all pruned or failed; see "
                         f"{report}); run more --trials")  # fmt: skip
    return TuneResult(Path(search.study_dir), done, candidates, best, best_toml, table, notes, report, front_json,
                      [t.number for t in front])  # fmt: skip


def study_facts(
    search: Search,
    importances: tuple[dict[str, float], str, str],
    trials: list[Any],
    candidates: list[Candidate],
    best: Candidate | None,
    best_toml: Path | None,
    table: str,
    notes: list[str],
    front: list[int] | None = None,
    costs: list[RunCost] | None = None,
    front_json: Path | None = None,
) -> StudyFacts:
    """The plain values of the study report: the trials (FrozenTrials), importances (`_importances`), re-runs.

    A --frontier study adds its front (trial numbers) and each candidate's cost (`costs`, in the same order).
    """
    facts = [
        TrialFacts(
            number=t.number,
            state=t.state.name,
            value=None if not t.values or t.state.name != "COMPLETE" else t.values[0] * 100,
            params=dict(t.params),
            intermediate=_curve(t),
            run_dir=t.user_attrs.get("run_dir"),
            duration_seconds=t.duration.total_seconds() if t.duration is not None else None,
            tflops=t.values[1] if search.frontier and t.values and t.state.name == "COMPLETE" else None,
        )
        for t in trials
    ]
    values, method, why = importances
    rows = []
    for i, c in enumerate(candidates):
        mean, std = c.test_mean_std
        search_value = None if c.search_value is None else c.search_value * 100
        seconds = [s for s in c.seconds if s is not None]
        rows.append(RerunRow(c.name, search_value, c.val_mean, mean, std, len(c.test), is_winner=c is best,
                             is_preset=i == len(candidates) - 1, trial=c.trial,
                             tflops=costs[i].total / 1e12 if costs else None,
                             seconds=sum(seconds) / len(seconds) if seconds else None))  # fmt: skip
    space = {name: param.describe() for name, param in search.space.items()}
    verdict = table.strip().splitlines()[-1] if table.strip() else ""
    return StudyFacts(search.study_name, search.preset, Path(search.study_dir), space, search.storage.shown,
                      search.epochs_cap, facts, values, method, why, rows, verdict, best_toml,
                      list(notes), frontier=search.frontier, front=list(front or []),
                      front_json=front_json,
                      machine=measured_device(candidates) if search.frontier and candidates else "")  # fmt: skip


def _curve(trial: Any) -> dict[int, float]:
    """A trial's validation accuracy per epoch in %: what it reported, or (--frontier, nothing reported) its run's."""
    reported = {int(epoch): value * 100 for epoch, value in trial.intermediate_values.items()}
    return reported or {int(epoch): value * 100 for epoch, value in trial.user_attrs.get("val_curve", [])}


def _importances(study: Any, complete: int, frontier: bool = False) -> tuple[dict[str, float], str, str]:
    """Optuna's parameter importances (PED-ANOVA), its name, and why there are none (or what Optuna warned).

    In a --frontier study they are the importances of reaching the Pareto front (Optuna ranks the trials by
    non-domination, preferring neither objective).
    """
    import warnings

    import optuna

    method = "PED-ANOVA (Optuna's PedAnovaImportanceEvaluator)"
    if frontier:
        method += " of reaching the Pareto front of accuracy against cost"
    if complete < 2:
        return {}, method, f"they need at least 2 complete trials and the study has {complete}"
    try:
        with warnings.catch_warnings(record=True) as caught:  # too few trials warns; the report says so
            warnings.simplefilter("always")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as error:  # an importance is a nicety: the report goes on without it
        detail = " ".join(str(error).split())[:200]
        return {}, method, f"Optuna could not compute them ({type(error).__name__}: {detail})"
    experimental = optuna.exceptions.ExperimentalWarning
    said = {str(w.message) for w in caught if issubclass(w.category, UserWarning) and w.category is not experimental}
    note = "".join(f"Optuna warned: {message} " for message in sorted(said)).strip()
    return {name: float(value) for name, value in values.items()}, method, note
