"""cifarlab: train, compare, inspect and ship small-image classifiers.

The public names load on first use (PEP 562), so `import cifarlab.inference` pulls in neither the training stack
nor the API: a serving process carries only what it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cifarlab._version import __version__ as __version__

# public name -> the module that defines it
_EXPORTS = {
    "AuditResult": "cifarlab.auditing",
    "Callback": "cifarlab.training.callbacks",
    "Classifier": "cifarlab.inference.classifier",
    "DataConfig": "cifarlab.config",
    "Dataset": "cifarlab.data",
    "EarlyStopping": "cifarlab.training.callbacks",
    "History": "cifarlab.training.history",
    "ModelCheckpoint": "cifarlab.training.callbacks",
    "RunConfig": "cifarlab.config",
    "RunResult": "cifarlab.api",
    "Split": "cifarlab.data",
    "TrainConfig": "cifarlab.config",
    "Trainer": "cifarlab.training.trainer",
    "TuneResult": "cifarlab.tuning",
    "audit": "cifarlab.auditing",
    "compare": "cifarlab.reports.compare",
    "count_params": "cifarlab.models",
    "create_model": "cifarlab.models",
    "evaluate": "cifarlab.api",
    "get_preset": "cifarlab.presets",
    "list_models": "cifarlab.models",
    "list_presets": "cifarlab.presets",
    "load": "cifarlab.inference.load",
    "load_dataset": "cifarlab.data",
    "predict": "cifarlab.predicting",
    "resolve_config": "cifarlab.api",
    "resume": "cifarlab.api",
    "robustness": "cifarlab.scoring",
    "run_ladder": "cifarlab.ladder",
    "train": "cifarlab.api",
    "train_within": "cifarlab.budget",
    "tune": "cifarlab.tuning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (and kept, so later uses cost nothing)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # type checkers and IDEs see the names as if imported eagerly (the imports are the exports)
    from cifarlab.api import RunResult, evaluate, resolve_config, resume, train  # noqa: F401
    from cifarlab.auditing import AuditResult, audit  # noqa: F401
    from cifarlab.budget import train_within  # noqa: F401
    from cifarlab.config import DataConfig, RunConfig, TrainConfig  # noqa: F401
    from cifarlab.data import Dataset, Split, load_dataset  # noqa: F401
    from cifarlab.inference.classifier import Classifier  # noqa: F401
    from cifarlab.inference.load import load  # noqa: F401
    from cifarlab.ladder import run_ladder  # noqa: F401
    from cifarlab.models import count_params, create_model, list_models  # noqa: F401
    from cifarlab.predicting import predict  # noqa: F401
    from cifarlab.presets import get_preset, list_presets  # noqa: F401
    from cifarlab.reports.compare import compare  # noqa: F401
    from cifarlab.scoring import robustness  # noqa: F401
    from cifarlab.training.callbacks import Callback, EarlyStopping, ModelCheckpoint  # noqa: F401
    from cifarlab.training.history import History  # noqa: F401
    from cifarlab.training.trainer import Trainer  # noqa: F401
    from cifarlab.tuning import TuneResult, tune  # noqa: F401
