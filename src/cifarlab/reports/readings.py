"""Early-stopping readings replayed over a recorded run: `cifarlab readings RUN_DIR...`.

The seed calls `callbacks=[callback_modelcheckpoint, callback_loss, callback_accuracy]` and never shows them. Each
plausible reading (which metrics stop the run, with what patience, and which weights are tested) is a set of
`[train]` settings. Early stopping and checkpointing never change the training before the stop, so one full-length
run whose history holds the test split after every epoch (`train --test-each-epoch`) answers every reading exactly:
replaying the recipe's own callbacks (`recipe_callbacks`, the trainer's very ones) over its history gives the stop
epoch, the epoch whose weights a real run under that reading would test, and that epoch's test accuracy.

Each reading is also a TOML file under benchmarks/readings/ that `cifarlab train --config` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab.config import TrainConfig, config_from_dict, load_toml
from cifarlab.presets import get_preset, list_presets
from cifarlab.training.callbacks import recipe_callbacks, tested_epoch
from cifarlab.training.history import History

NO_CALLBACKS = "\n(the seed's step has no callbacks: every epoch runs, the last weights tested)"
READING_KEYS = (
    "early_stopping",
    "patience",
    "min_delta",
    "restore_best_weights",
    "test_weights",
)  # what a reading may set


@dataclass(frozen=True)
class Reading:
    """One reading of the seed's callbacks: the `[train]` settings it stands for, and a line saying what it is.

    Applied over a run's recipe as `train --config` applies a file over the preset: the keys it sets, no others.
    """

    name: str
    summary: str
    settings: dict[str, Any]

    def apply(self, recipe: TrainConfig) -> TrainConfig:
        """The recipe read this way (validated as any config)."""
        return dataclasses.replace(recipe, **self.settings)

    def toml(self) -> str:
        """This reading as a file `cifarlab train --config` accepts (benchmarks/readings/<name>.toml)."""
        lines = [f"# {self.summary}", "[train]"]
        for key, value in self.settings.items():
            shown = json.dumps(list(value) if isinstance(value, tuple) else value)
            lines.append(f"{key} = {shown}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, path: str | Path) -> Reading:
        """A reading from a TOML file holding a `[train]` table of READING_KEYS (e.g. benchmarks/readings/*.toml).

        Raises:
            ValueError: naming the file, if it is not TOML or sets anything else.
        """
        path = Path(path)
        try:
            table = load_toml(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable TOML file ({error})") from None
        train = table.get("train")
        other = sorted(set(table) - {"train"}) + sorted(set(train or {}) - set(READING_KEYS))
        if not isinstance(train, dict) or other or not train:
            raise ValueError(f"{path}: a reading is a [train] table of {', '.join(READING_KEYS)} only"
                             + (f" (it also sets {', '.join(other)})" if other else ""))  # fmt: skip
        settings = {key: tuple(value) if isinstance(value, list) else value for key, value in train.items()}
        comments = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
        reading = cls(path.stem, comments[0] if comments else "", settings)
        try:
            reading.apply(TrainConfig())
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: {error}") from None
        return reading


def _reading(
    name: str, summary: str, stop: tuple[str, ...], patience: int, restore: bool, test: str, min_delta: float = 0.0
) -> Reading:
    settings = {"early_stopping": stop, "patience": patience, "min_delta": min_delta, "restore_best_weights": restore}
    return Reading(name, summary, settings | {"test_weights": test})


READINGS = (
    _reading("keras_p3", "Keras' documented example and defaults (the presets' reading): EarlyStopping on the "
             "training loss and on the training accuracy, patience 3; the last weights kept and tested (the "
             "checkpoint is never loaded back)", ("loss", "accuracy"), 3, False, "last"),
    _reading("val_p10", "the presets' reading until session 21: EarlyStopping on val_loss and on val_accuracy, "
             "patience 10, best weights restored; the checkpoint's best-val_accuracy weights tested",
             ("val_loss", "val_accuracy"), 10, True, "checkpoint"),
    _reading("val_accuracy", "EarlyStopping on val_accuracy alone, patience 10, best weights restored; the "
             "checkpoint's best-val_accuracy weights tested", ("val_accuracy",), 10, True, "checkpoint"),
    _reading("keras_p10", "as keras_p3 with patience 10: EarlyStopping on the training loss and on the training "
             "accuracy; the last weights kept and tested", ("loss", "accuracy"), 10, False, "last"),
    _reading("named_code", "as public code that defines callback_loss and callback_acc: EarlyStopping on val_loss "
             "and on val_accuracy, min_delta 0.01, patience 10, best weights restored; the weights in memory tested",
             ("val_loss", "val_accuracy"), 10, True, "last", min_delta=0.01),
    _reading("none", "no early stopping: every epoch, the last weights tested", (), 10, False, "last"),
    _reading("none_best", "no early stopping: every epoch, the checkpoint's best-val_accuracy weights tested",
             (), 10, False, "checkpoint"),
)  # fmt: skip


def presets_reading(preset: str = "proyecto5") -> Reading | None:
    """The built-in reading the seed's presets use now (None if their callbacks match none of them)."""
    recipe = get_preset(preset).config.train
    return next((reading for reading in READINGS if reading.apply(recipe) == recipe), None)


@dataclass(frozen=True)
class Replayed:
    """What a run under one reading would have done, replayed over a recorded history.

    Attributes:
        stop_epoch: the last epoch the run trains (where an EarlyStopping stops it, or its last epoch).
        stopped: whether an EarlyStopping stopped it.
        tested_epoch: the epoch whose weights its final test evaluates.
        test_accuracy: that epoch's recorded test accuracy (None: the history has no test column).
        complete: False when the record ends before the run would (the answer would need more epochs).
    """

    stop_epoch: int
    stopped: bool
    tested_epoch: int
    test_accuracy: float | None
    complete: bool


class _Weights(torch.nn.Module):
    """Stands for a model in a replay: its one 'weight' is the epoch that trained it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("epoch", torch.zeros((), dtype=torch.int64))


class _ReplayTrainer:
    """The little of a Trainer that the recipe's callbacks touch."""

    def __init__(self) -> None:
        self.model = _Weights()
        self.stop_training = False

    def log(self, message: str) -> None:
        pass

    def save_model(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - no checkpoint path in a replay
        pass


def replay(history: History, recipe: TrainConfig) -> Replayed:
    """Replay `recipe`'s callbacks over a recorded history (epoch by epoch, as the trainer calls them)."""
    if not len(history):
        raise ValueError("the history holds no epoch to replay")
    trainer = _ReplayTrainer()
    callbacks = recipe_callbacks(recipe)
    for callback in callbacks:
        callback.set_trainer(trainer)  # type: ignore[arg-type]
    epoch = 0
    for epoch in range(1, len(history) + 1):
        trainer.model.epoch.fill_(epoch)
        logs = {key: history.history[key][epoch - 1] for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if trainer.stop_training:
            break
    tested = tested_epoch(callbacks, recipe, epoch)
    accuracy = history.history["test_accuracy"][tested - 1] if history.has_test else None
    complete = trainer.stop_training or epoch >= recipe.epochs
    return Replayed(epoch, trainer.stop_training, tested, accuracy, complete)


@dataclass(frozen=True)
class RecordedRun:
    """A run directory's config.json and history.csv (finished or not)."""

    run_dir: Path
    preset: str | None
    recipe: TrainConfig
    history: History

    @property
    def seed_accuracy(self) -> float | None:
        """The seed's figure for the run's preset (percent), if it is one of the seed's steps."""
        return get_preset(self.preset).seed_accuracy if self.preset in list_presets() else None

    @property
    def seed_has_callbacks(self) -> bool:
        """Whether the preset's own recipe has callbacks to read (the seed's steps 1 and 4 have none)."""
        if self.preset not in list_presets():
            return True
        recipe = get_preset(self.preset).config.train
        return recipe.checkpoint_best or bool(recipe.early_stopping)


def applicable(run: RecordedRun, readings: tuple[Reading, ...] = READINGS) -> tuple[Reading, ...]:
    """The readings that apply to a run: all of them, or 'none' alone where the seed's step has no callbacks.

    proyecto1 and proyecto4 have none: every epoch runs and the last weights are tested.
    """
    return readings if run.seed_has_callbacks else tuple(r for r in READINGS if r.name == "none")


def load_recorded(run_dir: str | Path) -> RecordedRun:
    """Read a run directory's config.json and history.csv.

    Raises:
        ValueError: naming the folder, if either is missing or unreadable.
    """
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "config.json").read_text())
        history = History.from_csv(run_dir / "history.csv")
        config = config_from_dict(record["config"])
    except FileNotFoundError:
        raise ValueError(f"{run_dir}: not a run directory (it needs config.json and history.csv)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{run_dir}: unreadable run record ({error})") from None
    if not len(history):
        raise ValueError(f"{run_dir}: its history.csv holds no epoch yet")
    return RecordedRun(run_dir, config.preset, config.train, history)


def replay_run(run: RecordedRun, readings: tuple[Reading, ...] = READINGS) -> list[tuple[Reading, Replayed]]:
    """Each reading replayed over a recorded run (the run's own recipe, read each way)."""
    return [(reading, replay(run.history, reading.apply(run.recipe))) for reading in readings]


def readings_table(run: RecordedRun, results: list[tuple[Reading, Replayed]], markdown: bool = False) -> str:
    """The replayed readings of one run as a text (or Markdown) table, with the seed's figure beside each."""
    seed = run.seed_accuracy
    head = ("reading", "stops at", "tested epoch", "test accuracy", "vs seed")
    rows = []
    for reading, replayed in results:
        stop = f"{replayed.stop_epoch}" + (" (early stop)" if replayed.stopped else "")
        accuracy = replayed.test_accuracy
        if not replayed.complete:
            stop, tested, shown, delta = f"> {replayed.stop_epoch} (record ends)", "-", "-", "-"
        elif accuracy is None or math.isnan(accuracy):
            tested, shown, delta = str(replayed.tested_epoch), "(no test column)", "-"
        else:
            tested, shown = str(replayed.tested_epoch), f"{100 * accuracy:.2f} %"
            delta = f"{100 * accuracy - seed:+.2f}" if seed is not None else "-"
        rows.append((reading.name, stop, tested, shown, delta))
    return _table(head, rows, markdown)


def describe(run: RecordedRun) -> str:
    """The header line of a run's readings: its preset, its record and the seed's figure."""
    known = run.seed_accuracy is not None
    seed = f"seed's figure {run.seed_accuracy:.2f} %" if known else "not one of the seed's steps"
    test = "" if run.history.has_test else "; no per-epoch test column (train --test-each-epoch): stops only"
    epochs = f"{len(run.history)} of {run.recipe.epochs} epochs recorded"
    chosen = presets_reading() if known and run.seed_has_callbacks else None
    presets = f"; the presets read the callbacks as {chosen.name}" if chosen else ""
    return f"{run.run_dir}: {run.preset or 'custom'}, {epochs}, {seed}{presets}{test}"


def readings_matrix(runs: list[tuple[RecordedRun, list[tuple[Reading, Replayed]]]], markdown: bool = False) -> str:
    """Every run × every reading in one table: the test accuracy each reading gives (stop epoch in brackets)."""
    names = list(dict.fromkeys(reading.name for _, results in runs for reading, _ in results))
    head = ["run", "seed's figure", *names]
    rows = []
    for run, results in runs:
        by_name = dict((reading.name, replayed) for reading, replayed in results)
        cells = [run.run_dir.name, f"{run.seed_accuracy:.2f}" if run.seed_accuracy is not None else "-"]
        for name in names:
            replayed = by_name.get(name)
            if replayed is None or not replayed.complete or replayed.test_accuracy is None:
                cells.append("-")
            else:
                cells.append(f"{100 * replayed.test_accuracy:.2f} ({replayed.stop_epoch})")
        rows.append(cells)
    return _table(head, rows, markdown)


def _table(head: list[str] | tuple[str, ...], rows: list, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in (head, *rows))  # fmt: skip


def readings(run_dirs: list[str | Path], reading_files: list[str | Path] | None = None,
             markdown: bool = False) -> str:  # fmt: skip
    """`cifarlab readings`: each run's replayed readings; for several runs, then every run × every reading.

    The readings are the built-in ones, or those of the files given.

    A step whose seed code has no callbacks (proyecto1, proyecto4) is read one way only: 'none'.
    """
    chosen = tuple(Reading.from_toml(path) for path in reading_files) if reading_files else READINGS
    blocks, runs = [], []
    for run_dir in run_dirs:
        run = load_recorded(run_dir)
        own = chosen if reading_files else applicable(run)
        note = "" if own is chosen else NO_CALLBACKS
        results = replay_run(run, own)
        runs.append((run, results))
        blocks.append(describe(run) + note + "\n" + readings_table(run, results, markdown))
    if len(runs) > 1:
        blocks.append("Every run, every reading: test accuracy % (stop epoch)\n" + readings_matrix(runs, markdown))
    return "\n\n".join(blocks)
