"""Replay early-stopping rules over a run's recorded history: where would each rule have stopped, and at what cost?

    python scripts/early_stop_replay.py benchmarks/ladder/proyecto4-s0 benchmarks/ladder/proyecto5-s0

For each history.csv, cifarlab's own `EarlyStopping` (the class a run uses) sees the recorded epochs one by one,
under several rules: the presets' reading of the seed's callbacks (val_loss and val_accuracy, patience 10, the
first to run out stops), each monitor alone, and longer patience. Printed per rule: the epoch it stops at and the
best validation accuracy up to there, the figure ModelCheckpoint(val_accuracy) would test. A history that ended
earlier than a rule would stop says so ("not reached"). See docs/fidelity.md, section 3.
"""

import argparse
from pathlib import Path

from cifarlab.training.callbacks import EarlyStopping
from cifarlab.training.history import History

RULES = {
    "val_loss + val_accuracy, patience 10 (presets)": [("val_loss", 10), ("val_accuracy", 10)],
    "val_loss, patience 10": [("val_loss", 10)],
    "val_accuracy, patience 10": [("val_accuracy", 10)],
    "val_loss + val_accuracy, patience 20": [("val_loss", 20), ("val_accuracy", 20)],
    "none (every epoch)": [],
}


class _Replay:
    """What EarlyStopping needs of a trainer: a stop flag and a log."""

    model = None
    stop_training = False

    def log(self, message: str) -> None:
        pass


def replay(history: History, monitors: list[tuple[str, int]]) -> tuple[int, float, int, bool]:
    """(stop epoch, best val_accuracy up to it, its epoch, stopped by a rule) for one rule."""
    trainer = _Replay()
    callbacks = [EarlyStopping(monitor, patience) for monitor, patience in monitors]
    for callback in callbacks:
        callback.set_trainer(trainer)
    rows = len(history)
    epoch = 0
    for epoch in range(1, rows + 1):
        logs = {key: values[epoch - 1] for key, values in history.history.items()}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if trainer.stop_training:
            break
    accuracies = history.history["val_accuracy"][:epoch]
    best = max(range(epoch), key=lambda i: accuracies[i])
    return epoch, accuracies[best], best + 1, trainer.stop_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding history.csv")
    args = parser.parse_args()
    for run in args.runs:
        history = History.from_csv(run / "history.csv")
        print(f"{run} ({len(history)} epochs recorded)")
        for name, monitors in RULES.items():
            epoch, accuracy, best_epoch, stopped = replay(history, monitors)
            where = f"stops at epoch {epoch:3d}" if stopped else f"not reached by epoch {epoch:3d}"
            print(f"  {name:48s} {where}: best val_accuracy {accuracy:.4f} (epoch {best_epoch})")


if __name__ == "__main__":
    main()
