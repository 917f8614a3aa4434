"""The figure that matters for each result a notebook holds, as a matplotlib Figure to show inline.

The figures are made without pyplot, so a notebook shows the one a cell returns once, and nothing is left open
for pyplot to draw again at the end of the cell. They show themselves as PNG (`_repr_png_`) whatever matplotlib's
backend, since cifarlab's reports draw off-screen outside a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cifarlab.reports.html import NotebookFigure
from cifarlab.reports.plots import FIGURES, TRAIN_COLOR, VAL_COLOR
from cifarlab.training.history import History

_BAR, _SEED, _PRUNED, _BEST = "#4c72b0", "black", "#dd8452", "#2a9d3a"


def history_figure(history: History, title: str | None = None) -> Figure:
    """The seed's two plots side by side: 'Cross Entropy Loss' and 'Classification Accuracy', train against val."""
    h = history.history
    epochs = h["epoch"]
    fig = NotebookFigure(figsize=(11, 3.8))
    marker = "o" if len(epochs) < 30 else None
    for ax, (plot_title, key) in zip(fig.subplots(1, 2), FIGURES.values()):
        ax.set_title(plot_title)
        ax.plot(epochs, h[key], color=TRAIN_COLOR, label="train", marker=marker, markersize=3)
        if any(v == v for v in h[f"val_{key}"]):
            ax.plot(epochs, h[f"val_{key}"], color=VAL_COLOR, label="val", marker=marker, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if epochs:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_bars_figure(labels: Sequence[str], means: Sequence[float], stds: Sequence[float],
                         seed: Sequence[float | None], title: str) -> Figure:  # fmt: skip
    """Test accuracy (%) per configuration, mean ± std over seeds, with the seed's Keras figure where it has one."""
    height = 0.42 * len(labels) + 1.8
    fig = NotebookFigure(figsize=(8, height))
    ax = fig.subplots()
    rows = range(len(labels))
    ax.barh(rows, means, xerr=[s or 0 for s in stds], color=_BAR, label="cifarlab (mean ± std over seeds)")
    keras = [(i, value) for i, value in enumerate(seed) if value is not None]
    if keras:
        ax.scatter([v for _, v in keras], [i for i, _ in keras], color=_SEED, marker="|", s=300, zorder=3,
                   label="the seed's Keras")  # fmt: skip
    for i, mean in enumerate(means):
        ax.text(mean + 0.8, i, f"{mean:.2f}", va="center", fontsize=8)
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="lower center", ncol=2, frameon=False)  # below the axes: off the bars and ticks
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    return fig


def study_figure(trials: Sequence[Any], winner: int | None = None) -> Figure:
    """A search's history: each trial's validation accuracy (pruned ones at their last epoch) and the best so far.

    Args:
        trials: Optuna FrozenTrials (their number, state, value and intermediate values; accuracies in [0, 1]).
        winner: the number of the trial the re-runs chose, starred.
    """
    fig = NotebookFigure(figsize=(9, 3.8))
    ax = fig.subplots()
    # values[0]: the validation accuracy, in a --frontier study too (whose trials have no single `value`)
    complete = [(t.number, t.values[0] * 100) for t in trials if t.state.name == "COMPLETE" and t.values]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)] * 100)
              for t in trials if t.state.name == "PRUNED" and t.intermediate_values]  # fmt: skip
    if complete:
        ax.scatter(*zip(*complete), color=_BAR, s=30, zorder=3, label="complete")
        best, steps = -math.inf, []
        for number, value in sorted(complete):
            best = max(best, value)
            steps.append((number, best))
        ax.step(*zip(*steps), where="post", color=_BEST, label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned), color=_PRUNED, marker="x", s=36, zorder=3, label="pruned (last epoch)")
    won = [(n, v) for n, v in complete if n == winner]
    if won:
        ax.scatter(*zip(*won), s=220, marker="*", facecolors="none", edgecolors="black", zorder=4, label="winner")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    if complete or pruned:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def audit_figure(class_names: Sequence[str], labels: np.ndarray, flagged: np.ndarray) -> Figure:
    """Likely label errors per given class, as a share of that class's images."""
    counts = np.bincount(labels, minlength=len(class_names))
    flags = np.bincount(labels[flagged], minlength=len(class_names)) if len(flagged) else np.zeros(len(counts))
    share = np.divide(flags * 100, counts, out=np.zeros(len(counts)), where=counts > 0)
    fig = NotebookFigure(figsize=(7, 0.38 * len(class_names) + 1.4))
    ax = fig.subplots()
    ax.barh(range(len(class_names)), share, color=_PRUNED)
    for i, (value, n) in enumerate(zip(share, flags)):
        ax.text(value, i, f" {int(n)}", va="center", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.invert_yaxis()
    ax.set_xlabel("flagged as likely label errors (% of the class's images; count at the bar's end)")
    ax.set_title("Likely label errors per given class")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def images_figure(images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 6) -> Figure:
    """(H, W, 3) uint8 images in a grid, each with its caption."""
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    fig = NotebookFigure(figsize=(1.9 * columns, 2.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    fig.tight_layout()
    return fig
