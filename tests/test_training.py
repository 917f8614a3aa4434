import csv
import json

import pytest
import torch

import cifarlab
from cifarlab.device import describe_hardware
from cifarlab.training.callbacks import Callback, EarlyStopping, ModelCheckpoint
from cifarlab.training.history import HISTORY_COLUMNS, History
from tests.factories import make_dataset


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self):
        self.events.append("begin")

    def on_train_batch_end(self, step, logs):
        self.events.append(("batch", step, float(logs["loss"])))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch", epoch, dict(logs)))

    def on_train_end(self):
        self.events.append("end")


def test_fit_learns_fires_callbacks_and_writes_the_run(tmp_path, tiny_dataset):
    recorder = Recorder()
    result = cifarlab.train(
        "proyecto1", dataset=tiny_dataset, epochs=3, batch_size=32, val_size=40, out=str(tmp_path / "run"),
        quiet=True, callbacks=[recorder], precision="fp32",
    )  # fmt: skip
    history = result.history.history
    assert history["loss"][-1] < history["loss"][0]
    assert history["epoch"] == [1, 2, 3]
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    assert [e[1] for e in recorder.events if e[0] == "epoch"] == [1, 2, 3]
    assert sum(1 for e in recorder.events if e[0] == "batch") == 3 * 4  # 120 train images / 32
    epoch_logs = [e[2] for e in recorder.events if e[0] == "epoch"]
    assert set(epoch_logs[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}

    run = result.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "history.csv", "model.safetensors", "model.json", "metrics.json", "loss.png",
            "accuracy.png"} <= names  # fmt: skip
    assert not [n for n in names if n.endswith(".tmp")]
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HISTORY_COLUMNS and len(rows) == 3
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    confusion = torch.tensor(metrics["test"]["confusion_matrix"])
    assert confusion.sum() == 40 and confusion.shape == (4, 4)
    assert metrics["test_accuracy"] == pytest.approx(confusion.diagonal().sum().item() / 40)
    assert set(metrics["test"]["per_class_accuracy"]) == set(tiny_dataset.class_names)
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["preset"] == "proyecto1" and config["config"]["train"]["epochs"] == 3
    assert config["hardware"] == describe_hardware(torch.device(config["device"]))  # beside every time it records
    for png in ("loss.png", "accuracy.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the saved model gives back exactly the accuracy the run printed
    reloaded = cifarlab.load(run, precision="fp32").evaluate(tiny_dataset.test)
    assert reloaded.percent() == result.test.percent()


def test_learns_a_tiny_dataset_well(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory is ./runs
    dataset = make_dataset(train=400, test=100)
    result = cifarlab.train("proyecto1", dataset=dataset, epochs=5, batch_size=32, val_size=0, quiet=True,
                            precision="fp32", out=None)  # fmt: skip
    assert result.test.accuracy >= 0.8  # 4 classes: chance is 0.25
    assert result.best_epoch is None  # no validation split: the last weights are tested
    assert result.run_dir.resolve().parent == tmp_path.resolve() / "runs"
    assert result.run_dir.name.startswith("proyecto1-")


def test_checkpoint_callback_selects_the_best_epoch(tmp_path, tiny_dataset):
    result = cifarlab.train(
        "proyecto2", dataset=tiny_dataset, epochs=3, batch_size=32, val_size=40, out=str(tmp_path / "run"),
        quiet=True, precision="fp32", test_weights="checkpoint",
    )  # fmt: skip
    best_epoch, best = result.history.best("val_accuracy")
    assert result.best_epoch == best_epoch
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["epoch"] == best_epoch
    assert meta["metrics"]["val_accuracy"] == pytest.approx(best)
    assert meta["class_names"] == tiny_dataset.class_names
    assert not (result.run_dir / "model-best.safetensors").exists()  # model.safetensors is the best


def test_the_seeds_reading_tests_the_last_weights_and_keeps_the_best_beside_them(tmp_path, tiny_dataset):
    """keras_p3, the presets' reading: model.safetensors holds the weights tested (the last), as the seed's
    model.evaluate after fit; its ModelCheckpoint's file is model-best.safetensors."""
    result = cifarlab.train("proyecto2", dataset=tiny_dataset, epochs=4, batch_size=32, val_size=40,
                            out=str(tmp_path / "run"), quiet=True, precision="fp32")  # fmt: skip
    run = result.run_dir
    best_epoch, best = result.history.best("val_accuracy")
    assert result.best_epoch is None and json.loads((run / "metrics.json").read_text())["tested_epoch"] == 4
    assert json.loads((run / "model.json").read_text())["epoch"] == 4
    assert cifarlab.load(run, precision="fp32").evaluate(tiny_dataset.test).accuracy == result.test.accuracy
    kept = json.loads((run / "model-best.json").read_text())
    assert kept["epoch"] == best_epoch and kept["metrics"]["val_accuracy"] == pytest.approx(best)
    cifarlab.load(run / "model-best.safetensors", precision="fp32")  # a checkpoint like any other


class _FakeTrainer:
    def __init__(self):
        self.model = torch.nn.Linear(2, 2)
        self.stop_training = False
        self.saved = []

    def log(self, message):
        pass

    def save_model(self, path, metrics=None, epoch=None):
        self.saved.append((epoch, metrics))


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    trainer = _FakeTrainer()
    stopper = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    stopper.set_trainer(trainer)
    best_weight = None
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.4], start=1):
        with torch.no_grad():
            trainer.model.weight.fill_(epoch)
        if epoch == 2:
            best_weight = trainer.model.weight.clone()
        stopper.on_epoch_end(epoch, {"val_loss": loss})
        if trainer.stop_training:
            break
    assert stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    assert torch.equal(trainer.model.weight, best_weight)


def test_early_stopping_on_a_training_metric_stops_a_run_that_has_stopped_learning(tmp_path):
    # Keras' monitor='accuracy' watches the training accuracy; with a step too small to move the weights it stays put
    config = cifarlab.resolve_config("proyecto1", epochs=6, batch_size=32, val_size=16, lr=1e-12, patience=2,
                                     precision="fp32", quiet=True, out=str(tmp_path / "run"),
                                     **{"train.early_stopping": ["accuracy"]})  # fmt: skip
    result = cifarlab.train(config=config, dataset=make_dataset(train=96, test=16), test=False)
    assert len(result.history) == 3  # epoch 1 sets the best, epochs 2 and 3 do not beat it
    with pytest.raises(ValueError, match="train.early_stopping"):
        cifarlab.resolve_config("proyecto1", **{"train.early_stopping": ["train_loss"]})


def test_model_checkpoint_writes_only_on_improvement():
    trainer = _FakeTrainer()
    checkpoint = ModelCheckpoint("somewhere.safetensors", monitor="val_accuracy")
    checkpoint.set_trainer(trainer)
    for epoch, acc in enumerate([0.5, 0.4, 0.7, 0.7], start=1):
        checkpoint.on_epoch_end(epoch, {"val_accuracy": acc})
    assert [e for e, _ in trainer.saved] == [1, 3]
    assert checkpoint.best_epoch == 3


def test_monitor_missing_from_logs_is_a_clear_error():
    stopper = EarlyStopping("val_loss")
    stopper.set_trainer(_FakeTrainer())
    with pytest.raises(ValueError, match="monitors 'val_loss', which the logs lack"):
        stopper.on_epoch_end(1, {"loss": 1.0})


def test_history_csv_round_trip(tmp_path):
    history = History()
    history.append({"epoch": 1, "loss": 2.0, "accuracy": 0.25, "lr": 0.001, "seconds": 1.5})
    history.to_csv(tmp_path / "h.csv")
    again = History.from_csv(tmp_path / "h.csv")
    assert again.history["loss"] == [2.0] and again.history["val_loss"][0] != again.history["val_loss"][0]
