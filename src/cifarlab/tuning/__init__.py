"""`cifarlab tune`: hyper-parameter search on Optuna (the `tune` extra), from one process to many machines."""

from cifarlab.tuning.tuner import TuneResult, tune

__all__ = ["TuneResult", "tune"]
