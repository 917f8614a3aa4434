"""History: per-epoch metrics, as Keras' `model.fit` returns them, saved as history.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cifarlab._io.atomic import write_text

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
# The test split evaluated after every epoch (`train --test-each-epoch`), for analysis only: no callback, checkpoint
# or early stopping reads these; a history has them only when the run recorded them.
ANALYSIS_COLUMNS = ("test_loss", "test_accuracy")


class History:
    """Per-epoch metrics. `history[key]` is the list of values of metric `key`, one per epoch."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_COLUMNS}

    def __len__(self) -> int:
        return len(self.history["epoch"])

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this history holds: HISTORY_COLUMNS, then the analysis columns where it recorded them."""
        return HISTORY_COLUMNS + tuple(key for key in ANALYSIS_COLUMNS if key in self.history)

    @property
    def has_test(self) -> bool:
        """Whether the run evaluated the test split after every epoch (`--test-each-epoch`)."""
        return "test_accuracy" in self.history

    def append(self, logs: dict[str, float]) -> None:
        """Add one epoch's logs (missing metrics are stored as NaN).

        The analysis columns are kept when the first epoch has them (then every epoch has them).
        """
        if not len(self):
            for key in ANALYSIS_COLUMNS:
                if key in logs:
                    self.history[key] = []
        for key in self.columns:
            self.history[key].append(float(logs.get(key, float("nan"))))

    def best(self, monitor: str, mode: str = "max") -> tuple[int, float]:
        """(1-based epoch, value) of the best `monitor` value."""
        values = self.history[monitor]
        pick = max if mode == "max" else min
        index = pick(range(len(values)), key=lambda i: values[i])
        return index + 1, values[index]

    def to_csv(self, path: str | Path) -> None:
        """Write history.csv atomically (accuracies as fractions in [0, 1])."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        columns = self.columns
        writer.writerow(columns)
        for i in range(len(self)):
            row = [int(self.history["epoch"][i])] + [f"{self.history[k][i]:.6g}" for k in columns[1:]]
            writer.writerow(row)
        write_text(path, buffer.getvalue())

    @classmethod
    def from_csv(cls, path: str | Path) -> History:
        """Read a history.csv written by `to_csv`.

        Raises:
            FileNotFoundError: if it is missing.
            ValueError: if a column is missing or a value is not a number.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        history = cls()
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = set(HISTORY_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path} lacks the columns {', '.join(sorted(missing))}")
            columns = HISTORY_COLUMNS + tuple(key for key in ANALYSIS_COLUMNS if key in (reader.fieldnames or ()))
            for line, row in enumerate(reader, start=2):
                try:
                    history.append({key: float(row[key]) for key in columns})
                except ValueError:
                    raise ValueError(f"{path}, line {line}: a value is not a number") from None
        return history
