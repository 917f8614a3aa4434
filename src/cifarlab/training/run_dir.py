"""The run directory, and its one writer: it makes the folder, names every file in it, and writes them from plain data.

A run directory holds, once finished:

    config.json          the resolved config, versions, hardware and the data's split sizes (`write_record`)
    history.csv          one row per epoch, rewritten after each epoch (`write_history`)
    model.safetensors    the weights, and model.json, what it takes to rebuild and feed them (`write_checkpoint`)
    model-best.safetensors  the best-val_accuracy weights (and model-best.json), when the test reads the last ones
    metrics.json         the test result, the best epoch, why training stopped, counts and date (`write_metrics`)
    predictions.npz      test (and validation) probabilities and labels, for reports (`write_predictions`)
    explanations.npz     Grad-CAM maps of the report's most confident mistakes (`write_explanations`)
    robustness.json      accuracy under the CIFAR-10-C corruptions, from `cifarlab robustness` (`write_robustness`),
                         and robustness_examples.png, a test image under each corruption at severity 3
    loss.png, accuracy.png, report.html   drawn from the files above by `cifarlab.reports` (`REPORT_FILES`)
    resume.pt            the whole training state while the run is unfinished (`write_resume`; removed at the end)
    mlflow.json, tensorboard/   with --logger: where the trackers log (written by `training.trackers`)

Everything here takes plain values (a History, arrays, dicts), never a live Trainer, so that a report rebuilt later
from the saved files (`cifarlab report RUN`) takes the same path as the one drawn at the end of `train`.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarlab._io.atomic import write_json, write_with
from cifarlab._io.paths import write_error
from cifarlab._version import __version__
from cifarlab.config import RunConfig
from cifarlab.inference.checkpoint import CHECKPOINT_NAME, meta_path, save_checkpoint
from cifarlab.training.history import History
from cifarlab.training.resume import RESUME_NAME, save_resume_state

BEST_CHECKPOINT_NAME = "model-best.safetensors"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.npz"
EXPLANATIONS_NAME = "explanations.npz"
REPORT_NAME = "report.html"
ROBUSTNESS_NAME = "robustness.json"
ROBUSTNESS_EXAMPLES_NAME = "robustness_examples.png"
META_NAME = meta_path(Path(CHECKPOINT_NAME)).name  # model.json
MLFLOW_RECORD_NAME = "mlflow.json"  # --logger mlflow: the MLflow run this run logs to (written by the tracker)
TENSORBOARD_DIR = "tensorboard"  # --logger tensorboard: the event files (written by TensorBoard's writer)
CURVE_NAMES = ("loss.png", "accuracy.png")
RUN_FILES = (CONFIG_NAME, METRICS_NAME, HISTORY_NAME)  # what makes a folder a finished run
REPORT_FILES = (*CURVE_NAMES, REPORT_NAME)  # drawn from the run's files by cifarlab.reports

__all__ = ["CHECKPOINT_NAME", "RESUME_NAME", "RunFiles", "git_revision", "make_run_dir", "run_record"]


@dataclass(frozen=True)
class RunFiles:
    """The files of one run directory: their paths, and how each is written (atomically)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """config.json: the run record."""
        return self.root / CONFIG_NAME

    @property
    def history(self) -> Path:
        """history.csv: per-epoch metrics."""
        return self.root / HISTORY_NAME

    @property
    def metrics(self) -> Path:
        """metrics.json: the finished run's results."""
        return self.root / METRICS_NAME

    @property
    def robustness(self) -> Path:
        """robustness.json: accuracy under corruptions (`cifarlab robustness`), when measured."""
        return self.root / ROBUSTNESS_NAME

    @property
    def predictions(self) -> Path:
        """predictions.npz: probabilities and labels for reports."""
        return self.root / PREDICTIONS_NAME

    @property
    def explanations(self) -> Path:
        """explanations.npz: Grad-CAM maps of the report's mistakes, when the run made them."""
        return self.root / EXPLANATIONS_NAME

    @property
    def checkpoint(self) -> Path:
        """model.safetensors (its metadata in model.json beside it)."""
        return self.root / CHECKPOINT_NAME

    @property
    def best_checkpoint(self) -> Path:
        """model-best.safetensors: the best-val_accuracy weights, where the test reads the last ones."""
        return self.root / BEST_CHECKPOINT_NAME

    def kept_best(self, test_weights: str) -> Path:
        """Where the ModelCheckpoint writes its best-val_accuracy weights.

        model.safetensors when the test reads them ('checkpoint'); else (`train.test_weights = 'last'`, the seed's
        presets) model-best.safetensors, beside the last weights.
        """
        return self.checkpoint if test_weights == "checkpoint" else self.best_checkpoint

    @property
    def resume(self) -> Path:
        """resume.pt: the training state of an unfinished run."""
        return self.root / RESUME_NAME

    @property
    def report(self) -> Path:
        """report.html."""
        return self.root / REPORT_NAME

    def is_finished(self) -> bool:
        """Whether the run saved its results (metrics.json)."""
        return self.metrics.is_file()

    def write_record(self, record: dict[str, Any]) -> None:
        """Write config.json (see `run_record`)."""
        write_json(self.config, record)

    def write_history(self, history: History) -> None:
        """Write history.csv."""
        history.to_csv(self.history)

    def write_resume(self, state: dict[str, Any]) -> None:
        """Write resume.pt (see `cifarlab.training.resume`)."""
        save_resume_state(self.resume, state)

    def drop_resume(self) -> None:
        """Remove resume.pt once the run's final files are written."""
        self.resume.unlink(missing_ok=True)

    def drop_leftovers(self) -> None:
        """Remove temporary files of writes cut short by a crash (the files they were replacing are whole)."""
        for leftover in self.root.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def write_checkpoint(self, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Write model.safetensors and model.json."""
        return save_checkpoint(self.checkpoint, model, meta)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json."""
        write_json(self.metrics, metrics)

    def write_robustness(self, robustness: dict[str, Any], examples_png: bytes) -> None:
        """Write robustness.json and robustness_examples.png."""
        write_with(self.root / ROBUSTNESS_EXAMPLES_NAME, lambda tmp: tmp.write_bytes(examples_png))
        write_json(self.robustness, robustness)

    def write_predictions(
        self,
        test_probabilities: Any | None,
        test_labels: Any | None,
        val_probabilities: Any = None,
        val_labels: Any = None,
    ) -> None:
        """Write predictions.npz: the test split's probabilities and labels, and the validation split's if any.

        Keys: `test_probabilities` (N, K) float32, `test_labels` (N,) int64, `test_index` (N,) int64 (the row of
        each image in the run's test split, i.e. the data source's test split after `--classes`), and, when the
        run had a validation split, `val_probabilities` and `val_labels` (for temperature scaling). A run that did
        not read the test split (a search's trial) has no `test_*` keys.
        """
        arrays = {}
        if test_probabilities is not None and test_labels is not None:
            arrays["test_probabilities"] = _numpy(test_probabilities).astype(np.float32)
            arrays["test_labels"] = _numpy(test_labels).astype(np.int64)
            arrays["test_index"] = np.arange(len(test_labels), dtype=np.int64)
        if val_probabilities is not None and val_labels is not None:
            arrays["val_probabilities"] = _numpy(val_probabilities).astype(np.float32)
            arrays["val_labels"] = _numpy(val_labels).astype(np.int64)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez_compressed(f, **arrays)

        write_with(self.predictions, write)

    def write_explanations(
        self, heatmaps: Any, test_index: Any, classes: Any, class_names: list[str], note: str | None = None
    ) -> None:
        """Write explanations.npz: Grad-CAM maps of test images, for their predicted and true classes.

        Keys: `heatmaps` (M, 2, H, W) float16 in [0, 1] (predicted class first, then true class), `test_index` (M,)
        int64 (rows of the run's test split, as in predictions.npz), `classes` (M, 2) int64 (the two classes),
        `class_names`, and `note`: empty, or why there are no maps (a model with no spatial feature map).
        """
        heatmaps = _numpy(heatmaps).astype(np.float16)
        arrays = {
            "heatmaps": heatmaps,
            "test_index": _numpy(test_index).astype(np.int64).reshape(-1),
            "classes": _numpy(classes).astype(np.int64).reshape(-1, 2),
            "class_names": np.array(class_names, dtype=str),
            "note": np.array(note or "", dtype=str),
        }
        if heatmaps.ndim != 4 or heatmaps.shape[1] != 2 or len(heatmaps) != len(arrays["test_index"]):
            raise ValueError(f"explanations: expected (M, 2, H, W) heatmaps for M test images, got {heatmaps.shape}")

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez_compressed(f, **arrays)

        write_with(self.explanations, write)


def _numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def make_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    """The run directory: `config.out`, or runs/<preset>-<timestamp> (made unique).

    Raises:
        ValueError: if `--out` is not empty, or the directory cannot be made or written to (before any training).
    """
    if config.out is not None:
        path = Path(config.out)
        if path.is_dir() and any(path.iterdir()):
            raise ValueError(f"--out {path} exists and is not empty; choose a new directory")
        _make_writable_dir(path, f"--out {path}")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{config.preset}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    _make_writable_dir(path, f"run directory {path} (choose another with --out)")
    return path


def _make_writable_dir(path: Path, name: str) -> None:
    """Create `path` (and its parents) and check a file can be written in it; else a one-line ValueError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{name}: cannot write there ({error.strerror or error})") from None
    if (error := write_error(path)) is not None:
        raise ValueError(f"{name}: cannot write there ({error})")


BUILD_REVISION_NAME = "_build_revision.txt"  # written into an installed package by setup.py


def git_revision() -> str | None:
    """The git commit of the running cifarlab, '+uncommitted' appended when its source had changes; None if unknown.

    An installed copy (`pip install .`) carries the revision it was built from (setup.py writes it); a checkout
    (`pip install -e .`) is asked directly.
    """
    package = Path(__file__).parents[1]
    built = package / BUILD_REVISION_NAME
    if built.is_file():
        return built.read_text().strip() or None
    revision = _git(package, "rev-parse", "HEAD")
    if revision and _git(package, "status", "--porcelain", "--untracked-files=no", "--", "."):
        revision += "+uncommitted"
    return revision or None


def _git(folder: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def run_record(
    config: RunConfig, *, device: str, hardware: str, precision: str, dataset: dict[str, Any]
) -> dict[str, Any]:
    """config.json's content: the resolved config, versions, the machine, and the data.

    `dataset` holds the source, class names and split sizes, as `resume` checks them.
    """
    return {
        "config": config.to_dict(),
        "git_revision": git_revision(),
        "cifarlab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "hardware": hardware,
        "precision": precision,
        "dataset": dataset,
    }
