"""cifarlab: train, compare, inspect and ship small-image classifiers."""

from cifarlab._version import __version__ as __version__
from cifarlab.api import RunResult, evaluate, resolve_config, resume, train
from cifarlab.auditing import AuditResult, audit
from cifarlab.config import DataConfig, RunConfig, TrainConfig
from cifarlab.data import Dataset, Split, load_dataset
from cifarlab.inference.classifier import Classifier
from cifarlab.inference.load import load
from cifarlab.ladder import run_ladder
from cifarlab.models import count_params, create_model, list_models
from cifarlab.presets import get_preset, list_presets
from cifarlab.training.callbacks import Callback, EarlyStopping, ModelCheckpoint
from cifarlab.training.history import History
from cifarlab.training.trainer import Trainer
from cifarlab.tuning import TuneResult, tune

__all__ = [
    "AuditResult",
    "Callback",
    "Classifier",
    "DataConfig",
    "Dataset",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "RunConfig",
    "RunResult",
    "Split",
    "TrainConfig",
    "Trainer",
    "TuneResult",
    "audit",
    "count_params",
    "create_model",
    "evaluate",
    "get_preset",
    "list_models",
    "list_presets",
    "load",
    "load_dataset",
    "resolve_config",
    "resume",
    "run_ladder",
    "train",
    "tune",
]
