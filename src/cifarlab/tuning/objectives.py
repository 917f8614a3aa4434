"""What a trial is scored on: its final validation accuracy, and in a `--frontier` study its recipe's cost too.

The cost is `cifarlab.training.cost.run_cost`'s FLOPs, in TFLOPs: the same figure on every machine, so a study's
trials stay comparable however many workers and machines ran them. It is the cost of the recipe as a user runs it
(the final test evaluation with its TTA views included), though a trial itself reads no test split.
"""

from __future__ import annotations

ACCURACY = "val_accuracy"  # maximised: the final model's validation accuracy
COST = "tflops"  # minimised in a --frontier study: the recipe's FLOPs / 1e12


def objectives(frontier: bool) -> list[str]:
    """The names of a study's objectives, as study.json records them."""
    return [ACCURACY, COST] if frontier else [ACCURACY]


def directions(frontier: bool) -> list[str]:
    """Optuna's direction of each objective."""
    return ["maximize", "minimize"] if frontier else ["maximize"]
