"""The seed's two figures, drawn from a saved History: 'Cross Entropy Loss' and 'Classification Accuracy'."""

from __future__ import annotations

from pathlib import Path

from cifarlab._io.atomic import write_with
from cifarlab.reports.html import plt
from cifarlab.training.history import History
from cifarlab.training.run_dir import CURVE_NAMES

TRAIN_COLOR = "blue"  # the seed's colours
VAL_COLOR = "orange"
TEST_COLOR = "purple"  # the test split per epoch (train --test-each-epoch), drawn dashed: analysis only
TEST_LABEL = "test, per epoch (analysis)"
TEST_NOTE = ("test, per epoch (analysis): the test split evaluated after every epoch (train --test-each-epoch) for "
             "analysis only; no callback, checkpoint or early stopping read it")  # fmt: skip
FIGURES = dict(zip(CURVE_NAMES, (("Cross Entropy Loss", "loss"), ("Classification Accuracy", "accuracy")), strict=True))


def plot_history(history: History, out_dir: str | Path) -> list[Path]:
    """Draw loss.png and accuracy.png in `out_dir`: train in blue, validation in orange, per epoch.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    epochs = history.history["epoch"]
    written = []
    for filename, (title, key) in FIGURES.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        ax.set_title(title)
        ax.plot(epochs, history.history[key], color=TRAIN_COLOR, label="train")
        val = history.history[f"val_{key}"]
        if any(v == v for v in val):  # any value that is not NaN
            ax.plot(epochs, val, color=VAL_COLOR, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
        path = out_dir / filename
        write_with(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
        plt.close(fig)
        written.append(path)
    return written
