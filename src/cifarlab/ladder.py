"""The seed's ladder in one command: train presets one after another, resumably, then compare them.

Each (preset, seed) trains into `RUNS_DIR/<preset>-s<seed>`. Running the same ladder again skips the runs that
finished (they have `metrics.json`), resumes the one that was interrupted from its `resume.pt`, and starts the
rest, so a ladder of many hours survives Ctrl-C, a crash or the end of a working day.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarlab import api
from cifarlab._download import cache_home
from cifarlab._io.atomic import write_json
from cifarlab.config import RunConfig, config_from_dict
from cifarlab.data import Dataset
from cifarlab.data.dataset import validation_count
from cifarlab.device import autocast, resolve_device, resolve_precision
from cifarlab.presets import get_preset
from cifarlab.progress import progress_bar, write
from cifarlab.training.callbacks import Callback
from cifarlab.training.run_dir import RunFiles
from cifarlab.transfer import preset_model
from cifarlab.transfer.weights import PRETRAINED_URLS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cifarlab.reports.compare import Comparison

SEED_LADDER = tuple(f"proyecto{n}" for n in range(1, 10))
LADDER_RECORD = "ladder.json"


@dataclass(frozen=True)
class LadderRun:
    """One rung: a preset at one seed, its run directory and its resolved config."""

    preset: str
    seed: int
    run_dir: Path
    config: RunConfig
    same_code_as: str | None = None  # an earlier preset of the ladder with this very recipe (proyecto8: proyecto7)

    @property
    def finished(self) -> bool:
        """The run saved its final metrics."""
        return RunFiles(self.run_dir).is_finished()

    @property
    def resumable(self) -> bool:
        """The run stopped after at least one complete epoch."""
        return RunFiles(self.run_dir).resume.is_file()


def default_presets(weights: str | None = None) -> list[str]:
    """proyecto1 ... proyecto9, and proyecto10 when VGG16's ImageNet weights are at hand (`weights` or cached)."""
    cached = cache_home() / "weights" / PRETRAINED_URLS["vgg16"].rsplit("/", 1)[-1]
    return [*SEED_LADDER, "proyecto10"] if weights is not None or cached.is_file() else list(SEED_LADDER)


def scaled(value: int, scale: float) -> int:
    """`value` epochs scaled by `scale`, rounded, at least 1."""
    return max(1, round(value * scale))


def plan_ladder(
    presets: Sequence[str],
    seeds: Sequence[int],
    runs_dir: str | Path,
    *,
    epochs_scale: float = 1.0,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> list[LadderRun]:
    """The ladder's runs in order (preset-major), with their configs; nothing is trained.

    Args:
        presets: preset names (see `cifarlab presets`).
        seeds: one run per preset and seed.
        runs_dir: where the run directories go.
        epochs_scale: epochs and early-stopping patience are scaled by this (at least 1 epoch each).
        config_file: a TOML file applied over every preset, before `overrides` (as `cifarlab train --config`).
        **overrides: config overrides for every run, as `api.train` takes them (e.g. `data=...`).

    Raises:
        KeyError: for an unknown preset.
        ValueError: for an empty list, a bad scale, or a run directory that holds a run of another config.
    """
    if not presets:
        raise ValueError("--presets: give at least one preset (see 'cifarlab presets')")
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. 0 or 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {','.join(map(str, seeds))}")
    if not (math.isfinite(epochs_scale) and epochs_scale > 0):
        raise ValueError(f"--epochs-scale must be a positive number, got {epochs_scale}")
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ValueError(f"--runs-dir {runs_dir} is a file; give a folder for the runs")
    runs = []
    recipes: dict[str, str] = {}  # a recipe (the config without its name) -> the first preset of the ladder with it
    for preset in presets:
        recipe = get_preset(preset).config.train
        same = recipes.setdefault(_recipe_key(preset), preset)
        copy = same if same != preset else None
        # a preset that repeats an earlier one's code (proyecto8 writes out Adam's default lr: proyecto7, bit for bit)
        # runs at the next seeds instead, so it adds seeds of that code rather than repeating a run
        shift = max(seeds) - min(seeds) + 1 if copy else 0
        for seed in (s + shift for s in seeds):
            config = api.resolve_config(
                preset,
                config_file,
                **overrides,
                seed=seed,
                epochs=scaled(recipe.epochs, epochs_scale),
                patience=scaled(recipe.patience, epochs_scale),
                out=str(runs_dir / f"{preset}-s{seed}"),
            )
            run = LadderRun(preset, seed, Path(config.out), config, copy)
            _check_same_run(run)
            runs.append(run)
    return runs


def _recipe_key(preset: str) -> str:
    recipe = get_preset(preset).config.to_dict()
    recipe.pop("preset")
    return json.dumps(recipe, sort_keys=True, default=str)


def _check_same_run(run: LadderRun) -> None:
    """A run directory left by an earlier ladder must hold this very config (the seed and epochs included)."""
    record_path = RunFiles(run.run_dir).config
    if not record_path.is_file():
        return
    try:  # through the config class, so options added since that run count at their defaults
        saved = json.loads(json.dumps(config_from_dict(json.loads(record_path.read_text())["config"]).to_dict()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{record_path} is not a readable run record; move {run.run_dir} away") from None
    wanted = json.loads(json.dumps(run.config.to_dict()))
    ignored = {"quiet"}
    differs = sorted(_diff_keys(saved, wanted) - ignored)
    if differs:
        raise ValueError(
            f"{run.run_dir} holds a run of another config ({', '.join(differs)} differ); "
            "use another --runs-dir or move it away"
        )


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key in set(a) | set(b):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys |= _diff_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.add(f"{prefix}{key}")
    return keys


def run_ladder(
    presets: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    runs_dir: str | Path = "runs/ladder",
    epochs_scale: float = 1.0,
    quiet: bool = False,
    compare: bool = True,
    config_file: str | Path | None = None,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    **overrides: Any,
) -> LadderResult:
    """Train a ladder of presets one after another, skipping finished runs and resuming an interrupted one.

    Args:
        presets: preset names; default `default_presets()` (the seed's steps).
        seeds: one run per preset and seed.
        runs_dir: the run directories go to `runs_dir/<preset>-s<seed>`.
        epochs_scale: a shortened ladder (`0.1`: a tenth of each preset's epochs and patience).
        quiet: no progress bars or per-epoch lines (the ladder's own lines still print).
        compare: end with the comparison report of every run in the ladder (`compare.html` in `runs_dir`).
        config_file: a TOML file applied over every preset, before `overrides`.
        dataset: data already in memory (otherwise loaded once, from `data=...`, for every run).
        callbacks: extra callbacks for every run (e.g. a tracker).
        **overrides: config overrides for every run (e.g. `data="../shared/datasets/cifar10-jpeg"`).

    Returns:
        A LadderResult: a list holding, for each run in order, its RunResult (None for a run that had finished
        before this call), and the comparison, which a notebook shows as a table and a chart.

    Example:
        >>> cifarlab.run_ladder(["proyecto1", "proyecto4"], seeds=[0, 1], epochs_scale=0.1, data="folder")
    """
    presets = list(presets) if presets else default_presets(overrides.get("weights"))
    runs = plan_ladder(presets, seeds, runs_dir, epochs_scale=epochs_scale, config_file=config_file,
                       quiet=quiet or None, **overrides)  # fmt: skip
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        runs_dir / LADDER_RECORD,
        {
            "presets": presets,
            "seeds": list(seeds),
            "epochs_scale": epochs_scale,
            "overrides": _plain(overrides),
            "config_file": str(config_file) if config_file is not None else None,
        },
    )
    results: list[api.RunResult | None] = []
    if dataset is None and not all(run.finished for run in runs):
        dataset = api.load_training_data(runs[0].config)  # once: every rung shares the same cached images
    estimate = _CostModel(runs, len(dataset.train) if dataset is not None else 0)
    bar = progress_bar(total=len(runs), desc="ladder", unit="run", position=0, dynamic_ncols=True, disable=quiet,
                       leave=True, outer=True)  # fmt: skip
    for copy in {run.preset: run for run in runs if run.same_code_as}.values():
        write(f"ladder: {copy.preset} is {copy.same_code_as}'s code (the same recipe); it runs at seed "
                   f"{copy.seed} and on, adding seeds of that code instead of repeating a run")  # fmt: skip
    for run in runs:
        if run.finished:
            write(f"ladder: {run.run_dir} has finished; skipped")
            estimate.done(run)
            results.append(None)
            bar.update(1)
            continue
        if not quiet:
            bar.set_postfix_str(f"{run.preset} s{run.seed}; {estimate.describe_left()}")
        if run.resumable:
            write(f"ladder: resuming {run.run_dir}")
        elif run.run_dir.exists():
            write(f"ladder: {run.run_dir} stopped before its first epoch; starting it again")
        result = api.finish_run(run.config, dataset=dataset, callbacks=callbacks)
        assert result is not None  # finished runs were skipped above
        estimate.done(run)
        write(f"ladder: {result.summary()}")
        write(result.test.percent())
        results.append(result)
        bar.update(1)
    bar.close()
    ladder = LadderResult(results, runs_dir=runs_dir)
    if compare:
        from cifarlab.reports.compare import comparison

        ladder.comparison = comparison([run.run_dir for run in runs if run.finished], runs_dir)
        print(ladder.comparison)
    return ladder


class LadderResult(list):
    """What `run_ladder` returns: each run's RunResult, in order, and the comparison of them all.

    A run that had finished before the call is None in the list; `comparison` is None with `compare=False`.
    """

    def __init__(self, results: list[api.RunResult | None], runs_dir: Path) -> None:
        super().__init__(results)
        self.runs_dir = runs_dir
        self.comparison: Comparison | None = None

    def _repr_html_(self) -> str:
        from cifarlab.display.html import comparison_html, run_html

        if self.comparison is not None:
            return comparison_html(self.comparison, kind="ladder")
        return "".join(run_html(result) for result in self if result is not None)

    def plot(self) -> Figure:
        """Each step's test accuracy beside the seed's (see `Comparison.plot`).

        Raises:
            ValueError: for a ladder run with `compare=False`.
        """
        if self.comparison is None:
            raise ValueError("this ladder ran with compare=False: compare its runs with cifarlab.reports.compare")
        return self.comparison.plot()


class _CostModel:
    """What is left, in time: each run's remaining epochs at the cost of its training step, timed on this machine.

    Every preset's network takes two timed steps on random data when the first estimate is asked for; the latest
    run's own epochs then say how the machine runs now (its load, evaluation, augmentation), and that ratio scales
    the rest. Early stopping can only shorten runs, so the estimate is an upper bound.
    """

    def __init__(self, runs: list[LadderRun], train_images: int) -> None:
        self.runs = runs
        self.train_images = train_images
        self.epoch_seconds: dict[Path, float] | None = None  # timed lazily: a quiet ladder never needs them
        self.epochs_left = {run.run_dir: 0 if run.finished else run.config.train.epochs for run in runs}
        self.ratio = 1.0

    def _time_presets(self) -> None:
        step: dict[str, float] = {}
        for run in self.runs:
            if self.epochs_left[run.run_dir] and run.preset not in step:
                step[run.preset] = _time_step(run.config)
        self.epoch_seconds = {}
        for run in self.runs:
            recipe = run.config.train
            images = self.train_images - validation_count(run.config.data.val_size, self.train_images)
            steps = recipe.steps_per_epoch or max(1, math.ceil(images / recipe.batch_size))
            self.epoch_seconds[run.run_dir] = step.get(run.preset, 0.0) * steps
        for run in self.runs:
            self._learn(run)

    def _learn(self, run: LadderRun) -> None:
        """Epochs done so far, and the machine's pace from the run's last 10 epochs against its timed step."""
        history = RunFiles(run.run_dir).history
        rows = history.read_text().strip().splitlines()[1:] if history.is_file() else []
        if not run.finished:
            self.epochs_left[run.run_dir] = max(0, run.config.train.epochs - len(rows))
        predicted = self.epoch_seconds.get(run.run_dir, 0.0) if self.epoch_seconds else 0.0
        if rows and predicted > 0:
            self.ratio = statistics.median(float(row.rsplit(",", 1)[1]) for row in rows[-10:]) / predicted

    def done(self, run: LadderRun) -> None:
        """Learn the pace from a run that ended, then forget its remaining epochs."""
        if self.epoch_seconds is not None:
            self._learn(run)
        self.epochs_left[run.run_dir] = 0

    def describe_left(self) -> str:
        """'at most about 3h10m left'."""
        if self.epoch_seconds is None:
            self._time_presets()
        assert self.epoch_seconds is not None
        seconds = self.ratio * sum(self.epochs_left[d] * self.epoch_seconds[d] for d in self.epochs_left)
        hours, rest = divmod(round(seconds), 3600)
        return f"at most about {hours}h{rest // 60:02d}m left"


def _time_step(config: RunConfig, steps: int = 2) -> float:
    """Seconds of one training step of the config's network at its batch size, on random images."""
    try:
        device = resolve_device(config.device)
        precision = resolve_precision(config.precision, device)
        model = preset_model(config).to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        size, batch = config.data.image_size, config.train.batch_size
        images = torch.randn(batch, 3, size, size, device=device)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (batch,), device=device)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
        model.train()

        def step() -> None:
            with autocast(device, precision):
                logits = model(images)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()  # the first step also compiles and allocates
        started = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - started) / steps
    except Exception:  # an estimate only: a network it cannot time counts as free
        return 0.0


def _plain(overrides: dict[str, Any]) -> dict[str, Any]:
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in overrides.items()}
