"""Predict a batch of image files with a saved model, keeping the images (and Grad-CAM maps) a notebook shows.

`cifarlab predict` streams its lines as each batch is done (`Classifier.iter_predictions`); this is the batch
a notebook cell holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlab.inference.classifier import Classifier
from cifarlab.inference.explain import explain_file
from cifarlab.inference.images import decode_image
from cifarlab.inference.load import load
from cifarlab.inference.predict import Prediction

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Predictions(list):
    """Predictions, one per file in order (a list), with the decoded images and any explanations, by path."""

    def __init__(self, predictions: list[Prediction], images: dict[str, np.ndarray],
                 explanations: dict[str, bytes]) -> None:  # fmt: skip
        super().__init__(predictions)
        self.images = images  # path -> (S, S, 3) uint8, as the model saw it
        self.explanations = explanations  # path -> PNG of the image and its top classes' Grad-CAM maps

    def _repr_html_(self) -> str:
        from cifarlab.display.html import predictions_html

        return predictions_html(self, self.images, self.explanations)

    def plot(self, columns: int = 6) -> Figure:
        """The images, each titled with its most likely class and probability (a matplotlib Figure)."""
        from cifarlab.display.figures import images_figure

        shown = [p for p in self if p.error is None]
        captions = [f"{Path(p.path).name}\n{p.classes[0]} {p.probabilities[0]:.2f}" for p in shown]
        return images_figure([self.images[p.path] for p in shown], captions, columns)


def predict(
    model: Any,
    paths: str | Path | Iterable[str | Path],
    *,
    top_k: int = 3,
    tta: bool | None = None,
    explain: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
) -> Predictions:
    """Top-k classes of image files (folders walked recursively), kept with the images to show them.

    Args:
        model: a run directory, its model.safetensors, an exported .onnx file, or a model `cifarlab.load` gave.
        paths: an image file or folder, or several.
        top_k: classes per image.
        tta: average test-time views (default: as the model's recipe evaluated).
        explain: also draw each image's Grad-CAM maps for its two most likely classes (not for ONNX).
        batch_size: images per model call.
        device: 'auto', 'cpu' or 'cuda' (for a model given by path).
        precision: 'auto', 'bf16' or 'fp32' (for a model given by path).

    Raises:
        ValueError: for a bad `top_k` or `batch_size`, or `explain` with an ONNX model.
    """
    classifier = model if hasattr(model, "predict_files") else load(model, device=device, precision=precision)
    if explain and not isinstance(classifier, Classifier):
        raise ValueError("explain=True needs gradients, which ONNX Runtime does not give: use the run directory")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    predictions = classifier.predict_files(paths, top_k, batch_size=batch_size, tta=tta)
    good = [p.path for p in predictions if p.error is None]
    images = {path: decode_image(path, classifier.image_size) for path in good}
    explanations = {path: explain_file(classifier, path, tta=tta) for path in good} if explain else {}
    return Predictions(predictions, images, explanations)
