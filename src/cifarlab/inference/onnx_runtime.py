"""An exported .onnx model run by ONNX Runtime, with the same interface as `Classifier`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifarlab.data.dataset import Split
from cifarlab.evaluation.metrics import EVAL_BATCH_SIZE, EvalResult, confusion_matrix
from cifarlab.inference.predict import Predictor


class OnnxClassifier(Predictor):
    """A model exported by `cifarlab export`, run on the CPU by ONNX Runtime.

    It predicts, evaluates and serves like a `Classifier`; its TTA views are those baked in at export.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        """Open `path`.

        Args:
            path: the .onnx file.
            threads: ONNX Runtime's intra-op threads; None uses every CPU this process may run on.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if it is not an ONNX model written by cifarlab.
        """
        try:
            import onnxruntime
        except ImportError:
            from cifarlab.extras import install_command  # the standard library only

            raise ValueError(f"{path}: running .onnx models needs onnxruntime: {install_command('export')}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{self.path} is not a readable ONNX model: {error}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in props or "image_size" not in props:
            raise ValueError(f"{self.path} was not exported by cifarlab (no class_names/image_size metadata)")
        self.class_names: list[str] = json.loads(props["class_names"])
        self.image_size = int(props["image_size"])
        self.tta = int(props.get("tta", "0"))
        accuracy = props.get("test_accuracy", "")
        self.meta: dict[str, Any] = {
            "format": "onnx",
            "preset": props.get("preset") or None,
            "model": props.get("model") or None,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "tta": self.tta,
            "metrics": {"test_accuracy": float(accuracy)} if accuracy else {},
            "data_source": props.get("data_source") or None,
            "data_dir": props.get("data_dir") or None,
            "cifarlab_version": props.get("cifarlab_version"),
        }

    def predict(self, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE, tta: bool | None = None) -> torch.Tensor:
        """Class probabilities (N, K) for (N, 3, H, W) uint8 images of the model's image size.

        Raises:
            ValueError: if `tta` asks for views the file does not hold (export again with or without --tta).
        """
        if tta is not None and tta != (self.tta > 0):
            have = f"with TTA level {self.tta}" if self.tta else "without TTA"
            raise ValueError(f"{self.path} was exported {have}; export again {'with' if tta else 'without'} --tta")
        size = self.image_size
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"expected (N, 3, {size}, {size}) uint8 images, got {tuple(images.shape)} {images.dtype}")
        pixels = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, S, S, 3), as the graph takes them
        outputs = [self.session.run(None, {"images": pixels[i : i + batch_size]})[0] for i in range(0, len(pixels),
                   batch_size)]  # fmt: skip
        return torch.from_numpy(np.concatenate(outputs))

    def evaluate(self, split: Split, batch_size: int = EVAL_BATCH_SIZE) -> EvalResult:
        """Loss, accuracy and confusion matrix on a labelled split."""
        probabilities = self.predict(split.images.cpu(), batch_size=batch_size)
        labels = split.labels.cpu()
        loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels).item()
        predictions = probabilities.argmax(dim=1)
        accuracy = (predictions == labels).float().mean().item()
        return EvalResult(loss, accuracy, confusion_matrix(predictions, labels, len(self.class_names)))
