"""A trained model ready for use: weights, class names and input scaling, loaded from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.data.dataset import Split
from cifarlab.data.loader import Normalization
from cifarlab.device import resolve_device, resolve_precision
from cifarlab.evaluation.metrics import EVAL_BATCH_SIZE, EvalResult, evaluate_model, predict_logits
from cifarlab.evaluation.tta import TTA
from cifarlab.inference.checkpoint import load_state, read_checkpoint, resolve_checkpoint
from cifarlab.inference.predict import Predictor
from cifarlab.models.registry import create_model


class Classifier(Predictor):
    """A model with what it takes to feed it: class names, image size and normalisation.

    Build one with `Classifier.load(path)` (or `cifarlab.load`). `predict_files` and `predict_image` (from
    `Predictor`) give the top-k classes of image files and Pillow images.
    """

    def __init__(
        self, model: nn.Module, meta: dict[str, Any], *, device: str = "auto", precision: str = "auto"
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.meta = meta
        # same memory format as in training, so evaluation reproduces the trainer's numbers exactly
        self.channels_last = bool(meta.get("channels_last", False))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).eval()
        self.tta = int(meta.get("tta", 0))  # the views the run's own test evaluation averaged
        # probabilities are softmax(logits / T), T fitted on the run's validation split (1: a run without one)
        self.temperature = float(meta.get("temperature") or 1.0)
        self.class_names: list[str] = list(meta["class_names"])
        self.image_size: int = int(meta["image_size"])
        self.normalization = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", precision: str = "auto") -> Classifier:
        """Load a checkpoint written by cifarlab (a run directory or its model.safetensors).

        Raises:
            FileNotFoundError: if there is no checkpoint there.
            ValueError: if the files are unreadable or do not fit the model they name.
        """
        weights = resolve_checkpoint(path)
        state, meta = read_checkpoint(weights)
        try:
            model = create_model(meta["model"], **meta.get("model_kwargs", {}))
        except KeyError as error:
            raise ValueError(f"{weights}: {error.args[0]}") from None
        load_state(model, state, weights)
        return cls(model, meta, device=device, precision=precision)

    def tta_level(self, tta: bool | None = None) -> int:
        """The TTA level to use: None -> the recipe's, False -> 0, True -> the recipe's or else 2."""
        if tta is None:
            return self.tta
        return (self.tta or 2) if tta else 0

    def predict(self, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE, tta: bool | None = None) -> torch.Tensor:
        """Class probabilities (N, K) for (N, 3, H, W) uint8 images of the model's image size.

        `tta`: None averages the views the recipe's test evaluation used; False the image alone; True the
        recipe's views, or the mirror and one-pixel shifts (level 2) for a recipe without TTA.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
        split = Split(images.to(self.device), torch.zeros(len(images), dtype=torch.int64, device=self.device))
        logits = predict_logits(
            TTA(self.model, self.tta_level(tta)),
            split,
            self.normalization,
            batch_size=batch_size,
            precision=self.precision,
            channels_last=self.channels_last,
        )
        return (logits / self.temperature).softmax(dim=1).cpu()

    def descriptors(self, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
        """(N, 2C) float32 descriptors of (N, 3, H, W) uint8 images, for finding the same shot again.

        The network's deepest feature map still at least a fifth of the image's side (C channels; AirNet's second
        group, a seed CNN's third stage), averaged and max-pooled over its positions, image and mirror image
        averaged. Deep enough to ignore a shift, a crop or a colour change, early enough to tell two photographs
        of the same class apart, which the head's features, trained to put a class together, do not.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
        layer = _middle_layer(self.model, images.shape[-1], self.device)
        captured: list[torch.Tensor] = []
        hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))

        def pooled(x: torch.Tensor) -> torch.Tensor:
            self.model(x)
            maps = captured.pop().float()
            return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

        split = Split(images.to(self.device), torch.zeros(len(images), dtype=torch.int64, device=self.device))
        try:
            return predict_logits(
                self.model,
                split,
                self.normalization,
                batch_size=batch_size,
                precision=self.precision,
                channels_last=self.channels_last,
                forward=lambda x: (pooled(x) + pooled(x.flip(3))) / 2,
            ).cpu()
        finally:
            hook.remove()

    def evaluate(self, split: Split, batch_size: int = EVAL_BATCH_SIZE) -> EvalResult:
        """Loss, accuracy and confusion matrix on a labelled split (loss and probabilities with the temperature)."""
        return evaluate_model(
            TTA(self.model, self.tta),
            split.to(self.device),
            self.normalization,
            len(self.class_names),
            batch_size=batch_size,
            precision=self.precision,
            channels_last=self.channels_last,
            temperature=self.temperature,
        )


def _middle_layer(model: nn.Module, side: int, device: torch.device) -> nn.Module:
    """The last module to run whose output is a feature map at least a fifth of the input's side."""
    found: list[nn.Module] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * 5 >= side:
            found.append(module)

    hooks = [module.register_forward_hook(record) for module in model.modules() if module is not model]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    if not found:
        raise ValueError(f"{type(model).__name__} has no feature map to describe images with")
    return found[-1]
