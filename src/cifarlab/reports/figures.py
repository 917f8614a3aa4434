"""The report's figures, drawn from saved arrays: curves, per-class accuracy, confusion, reliability, thumbnails."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from cifarlab.evaluation.calibration import ReliabilityBin
from cifarlab.reports.html import NotebookFigure, figure_png, plt
from cifarlab.reports.plots import TEST_COLOR, TEST_LABEL, TRAIN_COLOR, VAL_COLOR
from cifarlab.training.history import History


def curves_png(history: History, best_epoch: int | None) -> bytes:
    """The seed's two curves (loss, accuracy; train blue, validation orange) and the learning rate, side by side.

    A run trained with --test-each-epoch adds its per-epoch test figures, dashed green, labelled as analysis.
    """
    h = history.history
    epochs = h["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (title, key) in zip(axes, (("Cross Entropy Loss", "loss"), ("Classification Accuracy", "accuracy"))):
        ax.set_title(title)
        ax.plot(epochs, h[key], color=TRAIN_COLOR, label="train", marker="." if len(epochs) < 30 else None)
        if any(v == v for v in h[f"val_{key}"]):
            ax.plot(epochs, h[f"val_{key}"], color=VAL_COLOR, label="val", marker="." if len(epochs) < 30 else None)
        if history.has_test:
            ax.plot(epochs, h[f"test_{key}"], color=TEST_COLOR, linestyle="--", label=TEST_LABEL)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
    axes[2].set_title("Learning rate (at each epoch's end)")
    axes[2].plot(epochs, h["lr"], color="green")
    axes[2].set_xlabel("epoch")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes:
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.grid(alpha=0.3)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return figure_png(fig)


def per_class_png(class_names: list[str], accuracy: list[float], split: str = "test") -> bytes:
    """Per-class test accuracy as a horizontal bar chart, sorted from worst (top) to best."""
    order = sorted(range(len(class_names)), key=lambda i: -1 if math.isnan(accuracy[i]) else accuracy[i])
    fig, ax = plt.subplots(figsize=(5.5, 0.4 * len(class_names) + 1.2))
    values = [0.0 if math.isnan(accuracy[i]) else accuracy[i] * 100 for i in order]
    bars = ax.barh(range(len(order)), values, color="#4c72b0")
    ax.set_yticks(range(len(order)), [class_names[i] for i in order])
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel(f"{split} accuracy (%)")
    ax.set_title("Per-class accuracy")
    for bar, i in zip(bars, order):
        text = "no images" if math.isnan(accuracy[i]) else f"{accuracy[i] * 100:.1f}"
        ax.text(bar.get_width() + 0.8, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def confusion_png(confusion: np.ndarray, class_names: list[str], split: str = "test") -> bytes:
    """The confusion matrix as a heatmap with the counts written in (rows true, columns predicted)."""
    k = len(class_names)
    side = max(5.0, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({split})")
    threshold = confusion.max() / 2 if confusion.size else 0
    for i in range(k):
        for j in range(k):
            color = "white" if confusion[i, j] > threshold else "black"
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return figure_png(fig)


def reliability_png(before: list[ReliabilityBin], after: list[ReliabilityBin] | None, ece: float,
                    ece_after: float | None, temperature: float | None) -> bytes:  # fmt: skip
    """Reliability diagram: accuracy against confidence per bin, the count of images above each bar."""
    panels = [("before temperature scaling", before, ece)]
    if after is not None and ece_after is not None:
        panels.append((f"after temperature scaling (T = {temperature:.3f}, fitted on validation)", after, ece_after))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, bins, value) in zip(axes[0], panels):
        width = bins[0].high - bins[0].low
        centers = [b.low + width / 2 for b in bins]
        accuracy = [0.0 if b.count == 0 else b.accuracy for b in bins]  # an empty bin draws no bar and no gap
        confidence = [0.0 if b.count == 0 else b.confidence for b in bins]
        ax.bar(centers, accuracy, width=width, edgecolor="black", color="#4c72b0", label="accuracy")
        # the gap is hatched, not filled: over a bar (underconfidence) and over white it looks as in the legend
        ax.bar(centers, np.subtract(confidence, accuracy), bottom=accuracy, width=width, edgecolor="#d62728",
               facecolor="none", hatch="//", linewidth=1.2, label="gap to confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        for center, b, acc in zip(centers, bins, accuracy):
            if b.count:
                ax.text(center, max(acc, b.confidence) + 0.015, str(b.count), ha="center", fontsize=7, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("confidence (top-label probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {value * 100:.2f} % ({len(bins)} bins; images per bin above each bar)",
                     fontsize=10)  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def thumbnail_png(image: np.ndarray, scale: int = 3) -> bytes:
    """A (3, H, W) uint8 image as PNG, upscaled `scale` times with nearest-neighbour."""
    picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def corruption_examples_png(examples: dict[str, np.ndarray], scale: int = 3) -> bytes:
    """One image under each corruption: (3, H, W) uint8 images in a labelled strip, upscaled `scale` times."""
    names = list(examples)
    columns = min(8, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.35 * columns, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ax.imshow(examples[name].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(name.replace("_", " "), fontsize=7)
    fig.tight_layout()
    return figure_png(fig, colours=None)  # photographs: every colour kept


def robustness_png(accuracy: dict[str, dict[str, float]], clean: float) -> bytes:
    """`robustness_figure` as PNG bytes."""
    return figure_png(robustness_figure(accuracy, clean))


def robustness_figure(accuracy: dict[str, dict[str, float]], clean: float) -> NotebookFigure:
    """Accuracy (%) per corruption (rows) and severity (columns) as a heatmap, the values written in."""
    names = list(accuracy)
    severities = sorted({int(s) for row in accuracy.values() for s in row})
    grid = np.array([[accuracy[n].get(str(s), np.nan) * 100 for s in severities] for n in names])
    fig = NotebookFigure(figsize=(1.1 * len(severities) + 3.2, 0.38 * len(names) + 1.6))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(clean * 100, np.nanmax(grid)), aspect="auto")
    for i in range(len(names)):
        for j in range(len(severities)):
            if grid[i, j] == grid[i, j]:
                light = grid[i, j] < 0.6 * max(clean * 100, 1)
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if light else "black")  # fmt: skip
    ax.set_xticks(range(len(severities)), [f"severity {s}" for s in severities], fontsize=8)
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_title(f"Test accuracy (%) under each corruption; clean {clean * 100:.1f} %", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.03)
    fig.tight_layout()
    return fig
