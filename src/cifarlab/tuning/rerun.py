"""After the search: the best trials trained again over new seeds, now with the test split, against the preset.

A trial's validation accuracy is one draw; the winner is the trial whose re-runs score best on validation, and
its test accuracy (mean ± std over the seeds) is set beside the hand-tuned preset's at the same epochs. The
winner's whole config goes to `best.toml`, which `cifarlab train --config best.toml` trains again. The wall
seconds of each re-run (its training, final evaluations and saving) are kept in `reruns/seconds.json`, so a
continued study that reuses a finished re-run still has them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab import api
from cifarlab._io.atomic import write_json, write_text
from cifarlab.config import RunConfig
from cifarlab.data import Dataset
from cifarlab.training.run_dir import RunFiles
from cifarlab.tuning.search import Search, final_val_accuracy, forget_compiled_kernels

RERUNS_DIR = "reruns"
SECONDS_JSON = "seconds.json"  # in RERUNS_DIR: run folder name -> wall seconds of the run (training to saving)
BEST_TOML = "best.toml"
_NOT_IN_TOML = ("out", "quiet", "device", "precision", "channels_last", "compile", "sync_bn", "save_every_steps")


@dataclass
class Candidate:
    """A configuration trained over the re-run seeds: a trial, or the preset itself."""

    name: str  # 'trial 7' or the preset's name
    config: RunConfig
    search_value: float | None  # the trial's validation accuracy in the search (None for the preset)
    val: list[float] = dataclasses.field(default_factory=list)  # final validation accuracy per seed
    test: list[float] = dataclasses.field(default_factory=list)  # test accuracy per seed
    run_dirs: list[Path] = dataclasses.field(default_factory=list)
    seconds: list[float | None] = dataclasses.field(default_factory=list)  # wall seconds of each seed's run
    train_seconds: list[float] = dataclasses.field(default_factory=list)  # metrics.json's train_seconds per seed
    trial: int | None = None  # the trial's number (None for the preset)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # the trial's sampled values ({} for the preset)

    @staticmethod
    def _mean_std(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def val_mean(self) -> float:
        """Mean validation accuracy over the seeds."""
        return self._mean_std(self.val)[0]

    @property
    def test_mean_std(self) -> tuple[float, float]:
        """Test accuracy over the seeds: mean and sample std."""
        return self._mean_std(self.test)


def rerun_seeds(search: Search, count: int) -> list[int]:
    """The seeds of the re-runs: new ones, after the search's own."""
    return [search.seed + 1 + i for i in range(count)]


def rerun(search: Search, trials: list[Any], seeds: list[int], dataset: Dataset) -> list[Candidate]:
    """Train each trial (Optuna FrozenTrials, best first) and the preset over `seeds`; resumable, finished runs kept.

    Returns:
        The candidates, trials first (in the order given), the preset last.
    """
    folder = Path(search.study_dir) / RERUNS_DIR
    candidates = [Candidate(f"trial {t.number}", search.trial_config(t.params, None), t.values[0], trial=t.number,
                            params=dict(t.params)) for t in trials]  # fmt: skip
    preset = search.trial_config({}, None)  # the preset itself, at the search's epochs and hold-out
    candidates.append(Candidate(search.preset, preset, None))
    timing = folder / SECONDS_JSON
    for candidate in candidates:
        tag = candidate.name.replace("trial ", "trial-")
        for seed in seeds:
            run_dir = folder / f"{tag}-s{seed}"
            config = dataclasses.replace(candidate.config, seed=seed, out=str(run_dir))
            result, seconds = _train_or_reuse(config, run_dir, dataset, search.quiet)
            recorded = json.loads(timing.read_text()) if timing.is_file() else {}
            if seconds is not None:  # trained now; a reused finished run keeps the seconds recorded when it ran
                recorded[run_dir.name] = seconds
                write_json(timing, recorded)
            candidate.run_dirs.append(run_dir)
            candidate.val.append(final_val_accuracy(run_dir) * 100)
            candidate.test.append(result * 100)
            candidate.seconds.append(recorded.get(run_dir.name))
            candidate.train_seconds.append(float(_metrics(run_dir)["train_seconds"]))
    return candidates


def _train_or_reuse(config: RunConfig, run_dir: Path, dataset: Dataset, quiet: bool) -> tuple[float, float | None]:
    """Test accuracy of the run in `run_dir` and the wall seconds this call ran it, whole.

    A finished run is read, one that stopped is resumed, else trained. The seconds are None where this call did
    not run the whole of it (finished before, or resumed: the part before the stop, its loading included, was
    timed by no one), so that a cut re-run never counts as a fast one.
    """
    forget_compiled_kernels()
    resumed = RunFiles(run_dir).resume.is_file()
    started = time.perf_counter()
    result = api.finish_run(config, dataset=dataset, quiet=quiet)
    if result is None:
        return float(_metrics(run_dir)["test_accuracy"]), None
    return result.test.accuracy, None if resumed else time.perf_counter() - started


def _metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads(RunFiles(run_dir).metrics.read_text())


def winner(candidates: list[Candidate]) -> Candidate:
    """The trial whose re-runs have the best mean validation accuracy (the test split plays no part)."""
    return max((c for c in candidates[:-1]), key=lambda c: c.val_mean)


def write_best_toml(search: Search, best: Candidate) -> Path:
    """`best.toml`: the winner's whole config (its seed and run directory left out), for `cifarlab train --config`."""
    config = best.config.to_dict()
    epochs = config["train"]["epochs"]
    lines = [
        f"# cifarlab tune: the winner of study {search.study_name!r} ({best.name}), chosen by its re-runs' mean",
        f"# validation accuracy ({best.val_mean:.2f} % over {len(best.val)} seeds); {epochs} epochs, as searched:",
        f"#   cifarlab train --config {Path(search.study_dir) / BEST_TOML}",
        f"preset = {_toml(search.preset)}",
    ]
    skip = (*_NOT_IN_TOML, "preset", "seed")
    top = {key: value for key, value in config.items() if not isinstance(value, dict) and key not in skip}
    lines += [f"{key} = {_toml(value)}" for key, value in top.items() if value is not None]
    for section, values in config.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + _table(values, section)
    path = Path(search.study_dir) / BEST_TOML
    write_text(path, "\n".join(lines) + "\n")
    return path


def _table(values: dict[str, Any], prefix: str) -> list[str]:
    lines, nested = [], []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested += ["", f"[{prefix}.{key}]"] + _table(value, f"{prefix}.{key}")
        else:
            lines.append(f"{key} = {_toml(value)}")
    return lines + nested


def _toml(value: Any) -> str:
    """One TOML value: a string, a number, a boolean or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} to TOML")


def rerun_table(candidates: list[Candidate], best: Candidate) -> str:
    """The terminal table of the re-runs: search value, validation and test mean ± std, against the preset."""
    preset = candidates[-1]
    base_mean, base_std = preset.test_mean_std
    header = ("", "config", "search val", "re-run val", "re-run test (mean ± std)", "vs preset")
    rows = []
    for candidate in candidates:
        mean, std = candidate.test_mean_std
        rows.append((
            "*" if candidate is best else "",
            candidate.name,
            "-" if candidate.search_value is None else f"{candidate.search_value * 100:.2f}",
            f"{candidate.val_mean:.2f}",
            f"{mean:.2f} ± {std:.2f}",
            "-" if candidate is preset else f"{mean - base_mean:+.2f}",
        ))  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    spread = (base_std**2 + best.test_mean_std[1] ** 2) ** 0.5
    gain = best.test_mean_std[0] - base_mean
    verdict = ("larger than" if abs(gain) > spread else "within") + f" the seeds' spread ({spread:.2f})"
    lines.append(f"accuracies in %, over {len(preset.test)} seeds; * the winner (best re-run validation accuracy): "
                 f"{gain:+.2f} points of test accuracy against {preset.name}, {verdict}")  # fmt: skip
    return "\n".join(lines) + "\n"
