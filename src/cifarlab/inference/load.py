"""`load`: a trained model from a run directory, a checkpoint or an exported .onnx file, ready to predict."""

from __future__ import annotations

from pathlib import Path

from cifarlab.inference.classifier import Classifier
from cifarlab.inference.images import is_image_file
from cifarlab.inference.onnx_runtime import OnnxClassifier


def load(path: str | Path, *, device: str = "auto", precision: str = "auto") -> Classifier | OnnxClassifier:
    """Load a trained model from a run directory, a checkpoint file or an exported .onnx file.

    An .onnx file runs on ONNX Runtime (CPU; `device` and `precision` do not apply) with the same methods.

    Example:
        >>> clf = cifarlab.load("runs/proyecto4-20261128-101500")
        >>> probabilities = clf.predict(images)  # (N, 3, 32, 32) uint8
        >>> clf.predict_files(["cat.jpg", "photos/"], top_k=3)[0].classes
        ['cat', 'dog', 'deer']
    """
    if Path(path).suffix.lower() == ".onnx":
        return OnnxClassifier(path)
    if is_image_file(Path(path).name) and Path(path).is_file():  # `predict cat.jpg RUN`: the model comes first
        raise ValueError(f"{path} is an image, not a model; the model comes first: cifarlab predict MODEL IMAGE...")
    return Classifier.load(path, device=device, precision=precision)
