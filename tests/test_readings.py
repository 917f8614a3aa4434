"""train --test-each-epoch (analysis only) and `cifarlab readings` (early-stopping readings replayed over a record)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cifarlab
from cifarlab.cli import main
from cifarlab.config import TrainConfig
from cifarlab.reports.readings import READINGS, Reading, load_recorded, replay, replay_run
from cifarlab.training.callbacks import Callback
from cifarlab.training.history import History
from tests.factories import make_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
# small enough to train in seconds, long enough for every reading to stop somewhere different
RUN = {"epochs": 9, "batch_size": 32, "val_size": 40, "quiet": True, "precision": "fp32", "seed": 3}


class LogsSeen(Callback):
    """Records the keys of the logs callbacks are handed."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.keys |= set(logs)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(train=200, test=60)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, dataset):
    """proyecto5 at its full (tiny) length with the test split after every epoch: the record replays read."""
    out = tmp_path_factory.mktemp("full") / "run"
    cifarlab.train("proyecto5", dataset=dataset, out=str(out), early_stopping=(), test_each_epoch=True, **RUN)
    return out


def test_test_each_epoch_trains_bit_identically_and_no_callback_sees_it(tmp_path, dataset):
    runs = {}
    for each in (False, True):
        seen = LogsSeen()
        result = cifarlab.train("proyecto5", dataset=dataset, out=str(tmp_path / str(each)), patience=2,
                                early_stopping=("val_loss",), restore_best_weights=True, test_each_epoch=each,
                                callbacks=[seen], **RUN)  # fmt: skip
        runs[each] = (result, seen)
    (plain, seen_plain), (tested, seen_tested) = runs[False], runs[True]
    assert len(plain.history) < RUN["epochs"]  # an early stop happened, and at the same epoch in both
    assert len(tested.history) == len(plain.history)
    for key in TRAINING:
        assert tested.history.history[key] == plain.history.history[key], key
    weights = [load_file(run.run_dir / "model.safetensors") for run in (plain, tested)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert plain.test.accuracy == tested.test.accuracy
    assert not seen_tested.keys & {"test_loss", "test_accuracy"} and seen_tested.keys == seen_plain.keys
    assert "test_accuracy" not in plain.history.history
    accuracies = tested.history.history["test_accuracy"]
    assert len(accuracies) == len(tested.history) and all(0 <= a <= 1 for a in accuracies)
    metrics = json.loads((tested.run_dir / "metrics.json").read_text())
    assert accuracies[metrics["tested_epoch"] - 1] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    header = (tested.run_dir / "history.csv").read_text().splitlines()[0]
    assert header.endswith(",test_loss,test_accuracy")
    assert History.from_csv(tested.run_dir / "history.csv").history["test_accuracy"] == pytest.approx(
        accuracies, abs=1e-6
    )


@pytest.mark.parametrize("reading", READINGS, ids=lambda r: r.name)
def test_a_replayed_reading_agrees_with_a_real_run_of_it(tmp_path, dataset, full_run, reading):
    replayed = dict((r.name, result) for r, result in replay_run(load_recorded(full_run)))[reading.name]
    config = tmp_path / f"{reading.name}.toml"
    config.write_text(reading.toml())
    real = cifarlab.train("proyecto5", dataset=dataset, config_file=config, out=str(tmp_path / "real"), **RUN)
    metrics = json.loads((real.run_dir / "metrics.json").read_text())
    assert replayed.complete
    assert (len(real.history), metrics["tested_epoch"]) == (replayed.stop_epoch, replayed.tested_epoch)
    assert real.test.accuracy == pytest.approx(replayed.test_accuracy, abs=1e-6)


def test_the_readings_stop_and_test_where_they_should(full_run):
    results = {r.name: result for r, result in replay_run(load_recorded(full_run))}
    history = History.from_csv(full_run / "history.csv").history
    best = max(range(RUN["epochs"]), key=lambda i: (history["val_accuracy"][i], -i)) + 1
    assert results["none"].stop_epoch == results["none"].tested_epoch == RUN["epochs"]
    assert not results["none"].stopped
    assert results["none_best"].tested_epoch == best
    assert results["keras_p3"].stop_epoch <= results["keras_p10"].stop_epoch
    for name in ("keras_p3", "keras_p10"):  # last weights: the stop epoch's
        assert results[name].tested_epoch == results[name].stop_epoch


def test_replay_of_made_histories():
    history = History()
    val_loss = [1.0, 0.8, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    val_accuracy = [0.5, 0.6, 0.62, 0.7, 0.69, 0.68, 0.71, 0.7]
    loss = [2.0, 1.5, 1.2, 1.1, 1.15, 1.12, 1.11, 1.0]
    for epoch in range(8):
        history.append({"epoch": epoch + 1, "loss": loss[epoch], "accuracy": 0.1 * epoch, "val_loss": val_loss[epoch],
                        "val_accuracy": val_accuracy[epoch], "test_accuracy": 0.01 * (epoch + 1)})  # fmt: skip
    recipe = TrainConfig(epochs=8, checkpoint_best=True)
    both = replay(history, replace_reading(recipe, ("val_loss", "val_accuracy"), 2, True, "checkpoint"))
    assert (both.stop_epoch, both.stopped, both.tested_epoch) == (5, True, 4)  # val_loss: best 3, stop 5
    assert both.test_accuracy == pytest.approx(0.04)
    # last weights, restored: the val_loss stopper put back epoch 3's weights
    restored = replay(history, replace_reading(recipe, ("val_loss",), 2, True, "last"))
    assert (restored.stop_epoch, restored.tested_epoch) == (5, 3)
    kept = replay(history, replace_reading(recipe, ("val_loss",), 2, False, "last"))
    assert (kept.stop_epoch, kept.tested_epoch) == (5, 5)
    training = replay(history, replace_reading(recipe, ("loss",), 3, False, "last"))  # loss: best 4, no gain 5-7
    assert (training.stop_epoch, training.stopped) == (7, True)
    short = replay(history, replace_reading(TrainConfig(epochs=20), ("val_accuracy",), 5, True, "last"))
    assert not short.complete and short.stop_epoch == 8


def replace_reading(recipe: TrainConfig, stop, patience, restore, test) -> TrainConfig:
    return Reading("r", "", {"early_stopping": stop, "patience": patience, "restore_best_weights": restore,
                             "test_weights": test}).apply(recipe)  # fmt: skip


@pytest.mark.parametrize("reading", READINGS, ids=lambda r: r.name)
def test_each_reading_has_its_file_under_benchmarks(reading):
    path = ROOT / "benchmarks" / "readings" / f"{reading.name}.toml"
    assert Reading.from_toml(path).settings == reading.settings


def test_the_command_prints_each_reading_beside_the_seed(full_run, capsys):
    assert main(["readings", str(full_run), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "seed's figure 83.36 %; the presets read the callbacks as keras_p3" in out
    for reading in READINGS:
        assert f"| {reading.name} |" in out
    assert "Every run, every reading" not in out  # one run: no matrix


def test_several_runs_end_with_every_run_by_every_reading(full_run, capsys):
    assert main(["readings", str(full_run), str(full_run)]) == 0
    out = capsys.readouterr().out
    matrix = out.split("Every run, every reading: test accuracy % (stop epoch)\n")[1].splitlines()
    assert matrix[0].split() == ["run", "seed's", "figure", *(reading.name for reading in READINGS)]
    results = dict((r.name, x) for r, x in replay_run(load_recorded(full_run)))
    cells = matrix[1].split()
    assert cells[:2] == ["run", "83.36"]
    none = results["none"]
    assert f"{100 * none.test_accuracy:.2f}" in cells and f"({none.stop_epoch})" in cells


@pytest.mark.parametrize(("content", "message"), [
    ("[train]\nepochs = 3\n", "also sets epochs"),
    ("[train]\ntest_weights = 'best'\n", "train.test_weights"),
    ("not toml", "not a readable TOML file"),
])  # fmt: skip
def test_a_bad_reading_file_is_one_line_naming_it(tmp_path, full_run, capsys, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    assert main(["readings", str(full_run), "--reading", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert main(["readings", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
