"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a model on a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.data.dataset import Split
from cifarlab.data.loader import BatchLoader, Normalization
from cifarlab.device import autocast
from cifarlab.progress import progress_bar

# Images per evaluation batch. At 1000, a batch's activations are too large for the allocator to keep: every batch
# maps fresh pages, and on 2 CPU cores the page faults took a quarter of an AirNet evaluation with TTA (166-200
# img/s against 257-275 at 125-250 images; proyecto9 without TTA 990 against 1,110; AMD EPYC family 25 model 17).
EVAL_BATCH_SIZE = 250


@dataclass
class EvalResult:
    """What evaluating a model on a labelled split gives.

    Attributes:
        loss: mean cross-entropy.
        accuracy: fraction of correct top-1 predictions, in [0, 1].
        confusion: (K, K) int64 counts; rows are true classes, columns predicted ones.
        probabilities: (N, K) float32 softmax of the outputs, on the CPU, in split order (None if not kept).
    """

    loss: float
    accuracy: float
    confusion: torch.Tensor
    probabilities: torch.Tensor | None = field(default=None, repr=False)

    @property
    def per_class_accuracy(self) -> list[float]:
        """Recall of each class (correct / images of that class); NaN for a class with no images."""
        totals = self.confusion.sum(dim=1).clamp(min=1)
        recall = self.confusion.diagonal() / totals
        return [float("nan") if n == 0 else float(r) for r, n in zip(recall, self.confusion.sum(dim=1))]

    def percent(self) -> str:
        """The accuracy as the seed prints it: '> ' and a percentage with three decimals."""
        return f"> {self.accuracy * 100:.3f}"

    def to_dict(self, class_names: list[str]) -> dict[str, Any]:
        """JSON-friendly form for metrics.json."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "per_class_accuracy": dict(zip(class_names, self.per_class_accuracy)),
            "confusion_matrix": self.confusion.tolist(),
            "class_names": list(class_names),
        }


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts of (true, predicted) pairs."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    split: Split,
    normalization: Normalization,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    precision: str = "fp32",
    channels_last: bool = False,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "predict",
    progress: bool = False,
) -> torch.Tensor:
    """Outputs (N, K) in float32 for every image of `split`, in order, with the model in eval mode.

    `forward` replaces `model(inputs)` (e.g. a backbone's feature extractor); the model's mode is still set.
    """
    was_training = model.training
    model.eval()
    forward = forward or model
    device = split.images.device
    loader = BatchLoader(split, batch_size, normalization, channels_last=channels_last)
    outputs = []
    bar = progress_bar(total=len(loader), desc=desc, unit="batch", disable=not progress)
    with autocast(device, precision), bar:
        for inputs, _ in loader:
            outputs.append(forward(inputs).float())
            bar.update(1)
    model.train(was_training)
    return torch.cat(outputs)


def evaluate_model(
    model: nn.Module,
    split: Split,
    normalization: Normalization,
    num_classes: int,
    **kwargs: Any,
) -> EvalResult:
    """Evaluate `model` on `split` (keyword arguments as `predict_logits`; `temperature` divides the logits)."""
    temperature = float(kwargs.pop("temperature", 1.0))
    logits = predict_logits(model, split, normalization, **kwargs) / temperature
    loss = F.cross_entropy(logits, split.labels).item()
    predictions = logits.argmax(dim=1)
    accuracy = (predictions == split.labels).float().mean().item()
    return EvalResult(
        loss=loss,
        accuracy=accuracy,
        confusion=confusion_matrix(predictions, split.labels, num_classes),
        probabilities=logits.softmax(dim=1).cpu(),
    )
