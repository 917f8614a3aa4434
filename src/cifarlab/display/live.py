"""What a run shows while it trains in a notebook: a bar over its epochs and the seed's two plots, redrawn in place.

`cifarlab.train` (and everything that trains through it: resume, the ladder, a search, an audit) adds these
callbacks in a Jupyter kernel unless the run is quiet; a terminal gets its per-epoch lines as before.
"""

from __future__ import annotations

from typing import Any

from cifarlab.display.figures import history_figure
from cifarlab.progress import in_notebook, progress_bar
from cifarlab.reports.html import figure_png
from cifarlab.training.callbacks import Callback


def notebook_callbacks(config: Any) -> list[Callback]:
    """The run's bar and live curves in a Jupyter kernel; nothing in a terminal or for a quiet run."""
    if config.quiet or not in_notebook():
        return []
    return [RunProgress(), LiveCurves()]


class LiveCurves(Callback):
    """The seed's 'Cross Entropy Loss' and 'Classification Accuracy' plots, redrawn in place after each epoch.

    It reads `trainer.history`, so a resumed run's curves start from its first epoch.
    """

    def __init__(self) -> None:
        self._handle: Any = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        from IPython.display import Image, display

        title = f"{self.trainer.config.preset}: epoch {epoch} of {self.trainer.recipe.epochs}"
        image = Image(data=figure_png(history_figure(self.trainer.history, title)), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


class RunProgress(Callback):
    """A bar over the run's epochs, between a ladder's bar and the epoch's; it goes when the run ends."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_train_begin(self) -> None:  # noqa: D102
        trainer = self.trainer
        self._bar = progress_bar(outer=True, total=trainer.recipe.epochs, initial=trainer.epoch,
                                 desc=trainer.config.preset, unit="epoch")  # fmt: skip

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: D102
        self._bar.update(1)
        if "val_accuracy" in logs:
            self._bar.set_postfix(val_accuracy=f"{logs['val_accuracy']:.4f}")

    def on_train_end(self) -> None:  # noqa: D102
        self._bar.total = self._bar.n  # a run that early stopping ended is done, not failed: no red bar left
        self._bar.close()
