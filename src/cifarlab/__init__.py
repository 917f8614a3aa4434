"""cifarlab: train, compare, inspect and ship small-image classifiers."""

__version__ = "0.1.0"

from cifarlab.api import RunResult, evaluate, load, resolve_config, resume, train  # noqa: E402
from cifarlab.classifier import Classifier  # noqa: E402
from cifarlab.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from cifarlab.data import Dataset, Split, load_dataset  # noqa: E402
from cifarlab.ladder import run_ladder  # noqa: E402
from cifarlab.models import count_params, create_model, list_models  # noqa: E402
from cifarlab.presets import get_preset, list_presets  # noqa: E402
from cifarlab.training.callbacks import Callback, EarlyStopping, ModelCheckpoint  # noqa: E402
from cifarlab.training.history import History  # noqa: E402
from cifarlab.training.trainer import Trainer  # noqa: E402

__all__ = [
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
]
