"""README's table of the seed's steps, from the ladder's run directories, and the run records kept in git.

    python scripts/ladder_table.py                       # print the table from runs/ladder
    python scripts/ladder_table.py --keep benchmarks/ladder --readme README.md

`--keep DIR` copies each run's config.json, history.csv and (when finished) metrics.json into DIR/<run>/, unless
DIR already holds a record that went further (a finished run, or more epochs): a machine's run directories do not
outlive its session, so a row restarted from scratch must not replace the longer record of an earlier session.
With `--keep`, the table is drawn from DIR, the records in git; `--readme FILE` replaces the table between the
`<!-- ladder-table -->` and `<!-- /ladder-table -->` markers.

A record counts as its step's only when it trained the preset's recipe as it is today (`recorded_recipe`: the
callbacks aside, which the table replays or names): a record of another recipe is named in the status column.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from cifarlab.config import TrainConfig, config_from_dict
from cifarlab.preset_changes import preset_changes
from cifarlab.presets import get_preset
from cifarlab.reports.readings import READING_KEYS, Replayed, applicable, load_recorded, presets_reading, replay_run
from cifarlab.reports.saved_run import load_run
from cifarlab.training.history import History

START, END = "<!-- ladder-table -->", "<!-- /ladder-table -->"
LADDER_COMMAND = "cifarlab ladder --data ../shared/datasets/cifar10-jpeg"
READING = presets_reading().name  # the presets' reading of the seed's callbacks (docs/fidelity.md §3); others beside it


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def _history(run_dir: Path) -> dict[str, list[float]]:
    return History.from_csv(run_dir / "history.csv").history if (run_dir / "history.csv").exists() else {}


def _hardware(record: dict) -> str:
    """The machine a run trained on, from its config.json record ('hardware', recorded since session 6), else '–'."""
    return str(record.get("hardware") or "–")


def _config_record(run_dir: Path) -> dict:
    """An unfinished run's config.json ({} when missing or unreadable; load_run reads a finished run's)."""
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


STEPS = [f"proyecto{i}" for i in range(1, 10)]


def same_code(preset: str) -> str | None:
    """The earlier step whose recipe this one repeats (proyecto8: proyecto7), as the ladder sees it; else None."""

    def recipe(name: str) -> dict:
        config = get_preset(name).config.to_dict()
        config.pop("preset")
        return config

    return next((earlier for earlier in STEPS[: STEPS.index(preset)] if recipe(earlier) == recipe(preset)), None)


def _callbacks(train: TrainConfig) -> tuple:
    """What a recipe's callbacks decide: nothing at all without them, else every setting a reading sets."""
    if not (train.checkpoint_best or train.early_stopping):
        return ()
    return (train.checkpoint_best, *(getattr(train, key) for key in READING_KEYS))


NOT_DECIDING = {*READING_KEYS, "checkpoint_best", "epochs", "test_each_epoch", "eval_batch_size", "duration"}
# what a run's callbacks decide, how long it ran and what it measured besides: not what it trains


@dataclass(frozen=True)
class RecordedRecipe:
    """How a run's recorded recipe stands against its preset's today, from one reading of its config.json."""

    reading: bool  # its callbacks are the preset's current reading (runs before session 21: val_p10)
    differences: list[str]  # what it trains differently (network, data, optimiser, augmentation), sorted

    @property
    def current(self) -> bool:
        """Whether the run measured what the preset measures today."""
        return self.reading and not self.differences


def recorded_recipe(preset: str, run_dir: Path) -> RecordedRecipe:
    """A run's recorded recipe against the preset's today: its callbacks, and the settings in which it differs
    (`preset_changes`; callbacks, epochs and analysis options aside).

    A record with no recipe is taken to be the preset's own; one that cannot be read differs in everything ("config").
    """
    record = _config_record(run_dir)
    if "config" not in record:
        return RecordedRecipe(True, [])
    split = record.get("dataset") or {}
    train_images = split.get("train", 0) + split.get("val", 0) or None  # before validation was held out
    try:
        config = config_from_dict(record["config"])
        changes = preset_changes(config, train_images)
    except (KeyError, TypeError, ValueError):
        return RecordedRecipe(False, ["config"])
    reading = _callbacks(config.train) == _callbacks(get_preset(preset).config.train)
    return RecordedRecipe(reading, sorted(key for key in changes or {} if key not in NOT_DECIDING))


def spread(preset: str, runs_dir: Path) -> str:
    """'mean ± std (n)' of the test accuracy over the finished seeds of the preset's code, or '–' below two.

    A step that repeats another's code (proyecto8) pools its seeds with that step's. Only runs whose callbacks are
    the preset's current reading and recipe count: a run under another reading or recipe measured something else.
    """
    code = same_code(preset) or preset
    names = [code] + [step for step in STEPS if same_code(step) == code]
    paths = sorted(path for name in names for path in runs_dir.glob(f"{name}-s*"))
    finished = [path for path in paths if (path / "metrics.json").exists() and recorded_recipe(preset, path).current]
    accuracies = [100 * load_run(path).metrics["test_accuracy"] for path in finished]
    if len(accuracies) < 2:
        return "–"
    return f"{statistics.mean(accuracies):.2f} ± {statistics.stdev(accuracies):.2f} ({len(accuracies)})"


def full_record(run_dir: Path) -> Path:
    """Where the step's full-length record with per-epoch test accuracy is kept (benchmarks/full_rows.sh)."""
    preset, seed = run_dir.name.rsplit("-s", 1)
    return run_dir.with_name(f"{preset}-full-s{seed}")


def replayed(preset: str, run_dir: Path) -> dict[str, Replayed] | None:
    """Every reading replayed over the step's full-length record, when it has a test column, trained the preset's
    recipe as it is today and answers READING (a record still growing may not answer the others yet)."""
    full = full_record(run_dir)
    if not (full / "history.csv").exists() or recorded_recipe(preset, full).differences:
        return None
    record = load_recorded(full)
    if not record.history.has_test:
        return None
    results = {reading.name: result for reading, result in replay_run(record, applicable(record))}
    chosen = results.get(READING) or results.get("none")
    return results if chosen is not None and chosen.complete else None  # a row still running may answer already


def _others(results: dict[str, Replayed] | None, chosen: str, preset: str) -> str:
    recipe = get_preset(preset).config.train
    if not (recipe.checkpoint_best or recipe.early_stopping):
        return "none: no callbacks in the seed"
    if not results or len(results) < 2:
        return "–"
    shown = [f"{name} {100 * r.test_accuracy:.2f}" if r.complete else f"{name} – (record ends at {r.stop_epoch})"
             for name, r in results.items() if name != chosen]  # fmt: skip
    return " · ".join(shown)


def row(preset: str, run_dir: Path, label: str | None = None) -> str:
    """One markdown row: the seed's figure, ours, the spread over seeds, the difference, epochs, time, hardware,
    status and the other readings' figures.

    A step with a full-length record (`full_record`) is read under READING, replayed; the others as they ran.
    """
    recipe = get_preset(preset)
    seed, planned = recipe.seed_accuracy, recipe.config.train.epochs
    head = f"| {label or preset} | {seed:.2f} % |"
    results = replayed(preset, run_dir)
    chosen = (results or {}).get(READING) or (results or {}).get("none")
    if chosen is not None:
        full = full_record(run_dir)
        seconds = sum(_history(full)["seconds"][: chosen.stop_epoch])
        reading = READING if READING in results else "none"
        stop = "early stopping" if chosen.stopped else "every epoch"
        seeds = spread(preset, run_dir.parent) if reading == READING else "–"
        return (
            f"{head} **{100 * chosen.test_accuracy:.2f} %** | {seeds} | "
            f"{100 * chosen.test_accuracy - seed:+.2f} | {chosen.stop_epoch} / {planned} | {_minutes(seconds)} | "
            f"{_hardware(_config_record(full))} | replayed ({reading}): {stop}, epoch {chosen.tested_epoch}'s "
            f"weights tested | {_others(results, reading, preset)} |"
        )
    if (run_dir / "metrics.json").exists():
        run = load_run(run_dir)
        ours = 100 * run.metrics["test_accuracy"]
        status = "full length"
        if run.epochs_run < planned:
            status = f"full recipe: early stopping (best epoch {run.metrics['best_epoch']})"
        recorded = recorded_recipe(preset, run_dir)
        if not recorded.reading:
            status = f"earlier reading (val_p10): early stopping at epoch {run.epochs_run}, best epoch tested"
        if recorded.differences:
            status = f"earlier recipe (differs in {', '.join(recorded.differences)})"
        return (
            f"{head} **{ours:.2f} %** | {spread(preset, run_dir.parent)} | {ours - seed:+.2f} | "
            f"{run.epochs_run} / {planned} | "
            f"{_minutes(run.train_seconds)} | {_hardware(run.record)} | {status} | {_others(None, READING, preset)} |"
        )
    history = _history(run_dir)
    if not history.get("epoch"):
        queued = "queued; the ladder command runs it"
        return f"{head} not started | – | – | 0 / {planned} | – | – | {queued} | {_others(None, READING, preset)} |"
    epoch, val = int(history["epoch"][-1]), history["val_accuracy"]
    return (
        f"{head} partial: val. {100 * val[-1]:.2f} % at epoch {epoch} (best {100 * max(val):.2f} %) | – | – | "
        f"{epoch} / {planned} | {_minutes(sum(history['seconds']))} so far | {_hardware(_config_record(run_dir))} | "
        f"stopped mid-run; the ladder command continues it | {_others(None, READING, preset)} |"
    )


def table(runs_dir: Path, seed: int = 0) -> str:
    lines = [
        "| step | seed's test acc. | ours (JPEG copy), seed 0 | over seeds: mean ± std (n) | difference | "
        "epochs run / planned | training time | hardware | status | other readings (replayed) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for step in STEPS:
        code = same_code(step)
        if code is None:
            lines.append(row(step, runs_dir / f"{step}-s{seed}"))
        else:  # the ladder runs a copy of an earlier step's code at the next seed
            label = f"{step}: {code}'s code, seed {seed + 1}"
            lines.append(row(step, runs_dir / f"{step}-s{seed + 1}", label))
    return "\n".join(lines)


def _progress(run_dir: Path) -> tuple[bool, int]:
    """(finished, epochs run): how far a run record went."""
    return (run_dir / "metrics.json").exists(), len(_history(run_dir).get("epoch", []))


def keep(runs_dir: Path, dest: Path) -> None:
    for run_dir in sorted(runs_dir.glob("proyecto*-s*")):
        if _progress(dest / run_dir.name) > _progress(run_dir):
            continue  # the record in git went further (an earlier session's run)
        names = ["config.json", "history.csv"] + (["metrics.json"] if (run_dir / "metrics.json").exists() else [])
        (dest / run_dir.name).mkdir(parents=True, exist_ok=True)
        for name in names:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, dest / run_dir.name / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ladder"))
    parser.add_argument("--keep", type=Path, help="copy the run records into this directory")
    parser.add_argument("--readme", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args()
    if args.keep:
        keep(args.runs_dir, args.keep)
    text = table(args.keep or args.runs_dir)
    if args.readme:
        readme = args.readme.read_text()
        before, rest = readme.split(START, 1)
        _, after = rest.split(END, 1)
        args.readme.write_text(f"{before}{START}\n{text}\n{END}{after}")
    print(text)


if __name__ == "__main__":
    main()
