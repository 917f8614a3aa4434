import json
import sys

import pytest

from cifarlab import api
from cifarlab.cli import main
from cifarlab.extras import install_command
from cifarlab.training.history import History
from cifarlab.training.trackers import make_tracker


def train_with(tracker, tmp_path, dataset):
    return api.train(
        "proyecto1", dataset=dataset, epochs=2, batch_size=32, val_size=40, checkpoint_best=True,
        out=str(tmp_path / "run"), quiet=True, precision="fp32", callbacks=[tracker],
    ).run_dir  # fmt: skip


def test_tensorboard_event_files_hold_every_epoch(tmp_path, tiny_dataset):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_with(make_tracker("tensorboard"), tmp_path, tiny_dataset)
    history = History.from_csv(run / "history.csv").history
    metrics = json.loads((run / "metrics.json").read_text())
    train = EventAccumulator(str(run / "tensorboard" / "train"))
    train.Reload()
    val = EventAccumulator(str(run / "tensorboard" / "validation"))
    val.Reload()

    def series(accumulator, tag):
        return [(event.step, event.value) for event in accumulator.Scalars(tag)]

    assert series(train, "epoch_loss") == [(1, pytest.approx(history["loss"][0], rel=1e-5)),
                                           (2, pytest.approx(history["loss"][1], rel=1e-5))]  # fmt: skip
    assert [v for _, v in series(val, "epoch_accuracy")] == pytest.approx(history["val_accuracy"], rel=1e-5)
    assert [v for _, v in series(train, "epoch_learning_rate")] == pytest.approx(history["lr"], rel=1e-5)
    assert series(train, "test_accuracy") == [(2, pytest.approx(metrics["test_accuracy"], rel=1e-5))]
    assert "config" in "".join(train.Tags()["tensors"])


def test_mlflow_file_store_holds_params_metrics_and_artifacts(tmp_path, tiny_dataset, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    from cifarlab.training.trackers import MLflowTracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    run = train_with(MLflowTracker(tracking_uri=uri, experiment="tests"), tmp_path, tiny_dataset)
    record = json.loads((run / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    mlflow_run = client.get_run(record["run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
    assert mlflow_run.data.params["preset"] == "proyecto1" and mlflow_run.data.params["train.epochs"] == "2"
    history = History.from_csv(run / "history.csv").history
    loss = client.get_metric_history(record["run_id"], "val_accuracy")
    assert sorted((m.step, m.value) for m in loss) == [(1, pytest.approx(history["val_accuracy"][0])),
                                                       (2, pytest.approx(history["val_accuracy"][1]))]  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert mlflow_run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    artifacts = {item.path for item in client.list_artifacts(record["run_id"])}
    assert {"report.html", "model.safetensors", "metrics.json", "config.json"} <= artifacts


@pytest.mark.parametrize(("name", "modules", "hint"), [
    ("tensorboard", ["torch.utils.tensorboard"], install_command("tensorboard")),
    ("mlflow", ["mlflow", "mlflow.tracking"], install_command("mlflow")),
])  # fmt: skip
def test_a_missing_extra_is_a_one_line_error_naming_what_to_install(name, modules, hint, monkeypatch, capsys):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(ValueError, match=hint.replace("[", r"\[").replace("]", r"\]")):
        make_tracker(name)
    assert main(["train", "--logger", name, "--data", "/no/such/folder"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and hint in err  # before any data is read


def test_no_logger_means_the_run_directory_alone(tmp_path, tiny_dataset):
    run = api.train("proyecto1", dataset=tiny_dataset, epochs=1, batch_size=32, val_size=40, out=str(tmp_path / "r"),
                    quiet=True, precision="fp32").run_dir  # fmt: skip
    assert not (run / "tensorboard").exists() and not (run / "mlflow.json").exists()
    assert not (tmp_path / "mlruns").exists()
