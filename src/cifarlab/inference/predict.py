"""Predictions on image files and Pillow images: decode as in training, batch, keep the top-k classes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cifarlab.evaluation.metrics import EVAL_BATCH_SIZE
from cifarlab.inference.images import decode_image, find_images, prepare_image


@dataclass
class Prediction:
    """The top-k classes of one image, most likely first; or why the image was skipped.

    Attributes:
        path: the file (or a name given to an in-memory image).
        classes: class names, most likely first.
        probabilities: their probabilities, in [0, 1].
        error: why the file was skipped (then `classes` is empty), else None.
    """

    path: str
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: file, top_k [{class, probability}], and error when skipped."""
        out: dict[str, Any] = {"file": self.path}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["top_k"] = [{"class": c, "probability": p} for c, p in zip(self.classes, self.probabilities)]
        return out

    def line(self) -> str:
        """One text line: `path  class probability  class probability ...`."""
        return "  ".join([self.path, *(f"{c} {p:.4f}" for c, p in zip(self.classes, self.probabilities))])


class Predictor:
    """What `predict_files` and `predict_image` need; `Classifier` and `OnnxClassifier` provide it."""

    class_names: list[str]
    image_size: int

    def predict(self, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE, tta: bool | None = None) -> torch.Tensor:
        """Class probabilities (N, K) for (N, 3, H, W) uint8 images."""
        raise NotImplementedError

    def predict_image(self, image: Image.Image, top_k: int = 3, tta: bool | None = None) -> Prediction:
        """Top-k classes of one Pillow image, converted and resized exactly as the training images were.

        Example:
            >>> clf = cifarlab.load("runs/fast94-20261128-101500")  # doctest: +SKIP
            >>> clf.predict_image(Image.open("cat.jpg")).classes[0]  # doctest: +SKIP
            'cat'
        """
        pixels = prepare_image(image, self.image_size)  # (S, S, 3)
        probabilities = self.predict(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous(), tta=tta)
        return _top_k(getattr(image, "filename", "") or "<image>", probabilities[0], self.class_names, top_k)

    def predict_files(
        self, paths: Iterable[str | Path], top_k: int = 3, *, batch_size: int = 256, tta: bool | None = None
    ) -> list[Prediction]:
        """Top-k classes of every image file; directories are walked recursively (image suffixes only).

        A file that cannot be used (missing, empty, not an image, truncated, over Pillow's decompression-bomb
        limit) gives a Prediction with `error` set, and the others are still predicted.

        Raises:
            ValueError: if `top_k` or `batch_size` is below 1.
        """
        return list(self.iter_predictions(paths, top_k, batch_size=batch_size, tta=tta))

    def iter_predictions(
        self, paths: Iterable[str | Path], top_k: int = 3, *, batch_size: int = 256, tta: bool | None = None
    ) -> Iterator[Prediction]:
        """As `predict_files`, yielding each batch's predictions as soon as they are made."""
        if top_k < 1:
            raise ValueError(f"--top-k must be 1 or more, got {top_k}")
        if batch_size < 1:
            raise ValueError(f"--batch-size must be 1 or more, got {batch_size}")
        files = find_images(list(paths))
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            decoded: list[np.ndarray | str] = [_decode_or_error(path, self.image_size) for path in chunk]
            good = [pixels for pixels in decoded if not isinstance(pixels, str)]
            probabilities = iter(())
            if good:
                images = torch.from_numpy(np.stack(good)).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)
                probabilities = iter(self.predict(images, batch_size=batch_size, tta=tta))
            for path, pixels in zip(chunk, decoded):
                if isinstance(pixels, str):
                    yield Prediction(str(path), error=pixels)
                else:
                    yield _top_k(str(path), next(probabilities), self.class_names, top_k)


def _decode_or_error(path: Path, image_size: int) -> np.ndarray | str:
    """The decoded image, or the reason it cannot be used."""
    try:
        return decode_image(path, image_size)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory"
    except (ValueError, OSError) as error:
        return str(error)


def _top_k(path: str, probabilities: torch.Tensor, class_names: list[str], k: int) -> Prediction:
    """A Prediction of the k most likely classes."""
    values, indices = probabilities.float().topk(min(k, len(class_names)))
    return Prediction(path, [class_names[i] for i in indices.tolist()], [round(v, 6) for v in values.tolist()])
