"""Optional experiment trackers as callbacks: TensorBoard event files and MLflow runs.

The run directory stays the record of a run; a tracker copies what it holds into a tool that many runs share.
Each needs its extra (`tensorboard`, `mlflow`); without it,
building the tracker is a one-line error that says so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cifarlab._io.atomic import write_json
from cifarlab.extras import install_command
from cifarlab.training.callbacks import Callback
from cifarlab.training.run_dir import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    HISTORY_NAME,
    META_NAME,
    METRICS_NAME,
    MLFLOW_RECORD_NAME,
    REPORT_NAME,
    TENSORBOARD_DIR,
)

TRACKERS = ("tensorboard", "mlflow")
ARTIFACTS = (REPORT_NAME, CHECKPOINT_NAME, META_NAME, CONFIG_NAME, METRICS_NAME, HISTORY_NAME)


class Tracker(Callback):
    """A callback that also hears, through `on_run_saved`, when the run's final files are written."""

    def on_run_saved(self, run_dir: Path) -> None:
        """Called once after metrics.json and report.html are written."""

    def _run_dir(self) -> Path:
        if self.trainer.run_dir is None:
            raise ValueError(f"{type(self).__name__} needs a run directory (the trainer has none)")
        return self.trainer.run_dir


def make_tracker(name: str) -> Tracker:
    """The tracker called `name` ('tensorboard' or 'mlflow'), with its defaults.

    Raises:
        ValueError: for an unknown name, or when the tracker's package is not installed.
    """
    if name == "tensorboard":
        return TensorBoardTracker()
    if name == "mlflow":
        return MLflowTracker()
    raise ValueError(f"--logger must be one of {', '.join(TRACKERS)}; got '{name}'")


def _finite(logs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    values = {key: float(logs[key]) for key in keys if key in logs}
    return {key: value for key, value in values.items() if math.isfinite(value)}


class TensorBoardTracker(Tracker):
    """Write TensorBoard event files as Keras' TensorBoard callback does: train/ and validation/ side by side.

    Scalars per epoch: `epoch_loss`, `epoch_accuracy` (in both folders, so each chart shows both curves) and
    `epoch_learning_rate`; at the end `test_accuracy` and `test_loss`; the resolved config as text.

    Args:
        log_dir: where the event files go (default: `RUN_DIR/tensorboard`, so `tensorboard --logdir runs` shows
            every run).

    Raises:
        ValueError: if the tensorboard package is missing.
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                f"--logger tensorboard needs the tensorboard package: {install_command('tensorboard')}"
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writers: dict[str, Any] = {}

    def on_train_begin(self) -> None:  # noqa: D102
        root = self.log_dir or self._run_dir() / TENSORBOARD_DIR
        self.writers = {part: self._writer_class(str(root / part)) for part in ("train", "validation")}
        config = json.dumps(self.trainer.config.to_dict(), indent=2)
        self.writers["train"].add_text("config", f"```\n{config}\n```", global_step=self.trainer.epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        train = _finite(logs, ("loss", "accuracy", "lr"))
        val = _finite(logs, ("val_loss", "val_accuracy"))
        for key, value in train.items():
            self.writers["train"].add_scalar("epoch_learning_rate" if key == "lr" else f"epoch_{key}", value, epoch)
        for key, value in val.items():
            self.writers["validation"].add_scalar(f"epoch_{key.removeprefix('val_')}", value, epoch)
        for writer in self.writers.values():
            writer.flush()

    def on_run_saved(self, run_dir: Path) -> None:  # noqa: D102
        metrics = json.loads((run_dir / METRICS_NAME).read_text())
        step = int(metrics.get("epochs_run", self.trainer.epoch))
        self.writers["train"].add_scalar("test_accuracy", metrics["test_accuracy"], step)
        self.writers["train"].add_scalar("test_loss", metrics["test"]["loss"], step)
        for writer in self.writers.values():
            writer.close()


class MLflowTracker(Tracker):
    """Log a run to MLflow: the config as parameters, per-epoch metrics, and the run's files as artifacts.

    The store is `tracking_uri`, else `$MLFLOW_TRACKING_URI`, else a local file store `./mlruns` (which MLflow
    3 serves only with `MLFLOW_ALLOW_FILE_STORE=true`; it is set for this process when unset). A resumed run
    logs to the same MLflow run (its id is kept in `RUN_DIR/mlflow.json`).

    Args:
        tracking_uri: an MLflow tracking URI (e.g. `sqlite:///mlflow.db`, `http://127.0.0.1:5000`).
        experiment: the experiment's name.

    Raises:
        ValueError: if mlflow (or mlflow-skinny) is missing.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "cifarlab") -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ValueError(f"--logger mlflow needs MLflow: {install_command('mlflow')} (mlflow-skinny)") from None
        self._client_class = MlflowClient
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id: str | None = None

    def _resolve_uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:  # MLflow 3 refuses its file store unless asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri

    def on_train_begin(self) -> None:  # noqa: D102
        run_dir = self._run_dir()
        uri = self._resolve_uri()
        self.client = self._client_class(tracking_uri=uri)
        record_path = run_dir / MLFLOW_RECORD_NAME  # the MLflow run this run logs to: a resumed run continues it
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if record.get("tracking_uri") == uri:
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"cifarlab.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        write_json(record_path, {"tracking_uri": uri, "run_id": self.run_id})
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in self.trainer.config.dotted().items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        self._log_metrics(_finite(logs, ("loss", "accuracy", "val_loss", "val_accuracy", "lr")), epoch)

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def on_run_saved(self, run_dir: Path) -> None:  # noqa: D102
        metrics = json.loads((run_dir / METRICS_NAME).read_text())
        step = int(metrics.get("epochs_run", self.trainer.epoch))
        self._log_metrics({"test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test"]["loss"]}, step)
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.set_terminated(self.run_id, status="FINISHED")
