"""scripts/early_stop_replay.py: early-stopping rules replayed over a recorded history with cifarlab's EarlyStopping."""

from __future__ import annotations

import pytest

from cifarlab.training.history import History
from tests.factories import load_script


@pytest.fixture(scope="module")
def replay():
    return load_script("early_stop_replay").replay


def _history(val_loss: list[float], val_accuracy: list[float]) -> History:
    history = History()
    for epoch, (loss, accuracy) in enumerate(zip(val_loss, val_accuracy, strict=True), start=1):
        history.append({"epoch": epoch, "val_loss": loss, "val_accuracy": accuracy})
    return history


def test_val_loss_stops_while_accuracy_still_climbs(replay):
    # val_loss bottoms at epoch 3 and rises; val_accuracy improves every epoch (P4/P5's shape)
    loss = [1.0, 0.8, 0.6] + [0.6 + 0.01 * i for i in range(1, 13)]
    accuracy = [0.5 + 0.01 * i for i in range(15)]
    history = _history(loss, accuracy)
    assert replay(history, [("val_loss", 3), ("val_accuracy", 3)]) == (6, pytest.approx(0.55), 6, True)
    assert replay(history, [("val_accuracy", 3)]) == (15, pytest.approx(0.64), 15, False)
    assert replay(history, []) == (15, pytest.approx(0.64), 15, False)


def test_best_accuracy_is_taken_up_to_the_stop(replay):
    accuracy = [0.5, 0.7, 0.6, 0.6, 0.6, 0.9]
    history = _history([1.0] * 6, accuracy)
    epoch, best, best_epoch, stopped = replay(history, [("val_accuracy", 3)])
    assert (epoch, best, best_epoch, stopped) == (5, 0.7, 2, True)
