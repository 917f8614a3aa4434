"""ONNX export: the model with its input scaling (and optionally its TTA views) in one graph, checked on export.

The graph takes what an application has at hand, `uint8` RGB pixels `[N, H, W, 3]` already resized to the
model's side (resizing stays outside the graph: an in-graph resize drifts from Pillow's), and returns class
probabilities `[N, K]`. Class names, image size, preset and test accuracy travel in `metadata_props`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifarlab._io.atomic import atomic_path
from cifarlab._io.paths import writable_file
from cifarlab._version import __version__
from cifarlab.data.dataset import Split, balanced_first
from cifarlab.evaluation.tta import TTA
from cifarlab.inference.checkpoint import resolve_checkpoint
from cifarlab.inference.classifier import Classifier

DEFAULT_OPSET = 18
CHECK_BATCH_SIZES = (1, 2, 7, 256)  # 1 and 2 catch a batch dimension frozen at export, 7 an odd size
CHECK_TOLERANCE = 1e-4  # largest allowed |probability difference| between ONNX Runtime and PyTorch (fp32)


@dataclass
class ExportResult:
    """What `export_onnx` wrote and how its check against PyTorch went."""

    path: Path
    opset: int
    tta: int  # TTA level baked into the graph (0: none)
    run_tta: int  # the TTA level the run's own test accuracy was measured with
    image_size: int
    num_classes: int
    check_source: str  # which images the check used
    check_images: int
    top1_agree: int
    max_prob_diff: float

    def summary(self) -> str:
        """Two lines for the command line: the file, then the check's figures."""
        sizes = ", ".join(map(str, CHECK_BATCH_SIZES))
        return (
            f"exported {self.path} (ONNX opset {self.opset}; input uint8 [N, {self.image_size}, {self.image_size}, 3] "
            f"RGB, output probabilities [N, {self.num_classes}]; {self._tta_words()})"
            f"\nchecked against PyTorch on {self.check_images} {self.check_source} at batch sizes {sizes}: "
            f"top-1 agree {self.top1_agree}/{self.check_images}, max |prob diff| {self.max_prob_diff:.1e} "
            f"(limit {CHECK_TOLERANCE:g})"
        )

    def _tta_words(self) -> str:
        def level(n: int) -> str:
            return f"TTA level {n}" if n else "TTA off"

        if self.tta == self.run_tta:
            return f"{level(self.tta)}, as the run's test accuracy was measured"
        return (f"{level(self.tta)}, while the run's test accuracy used {level(self.run_tta)}: this file's accuracy "
                f"differs from the run's (fewer views: faster, usually a little less accurate)")  # fmt: skip


class _Exported(nn.Module):
    """uint8 (N, H, W, 3) -> probabilities (N, K): scaling, the model (with its TTA views), temperature, softmax."""

    def __init__(self, classifier: Classifier, tta: int) -> None:
        super().__init__()
        self.model = TTA(classifier.model, tta)
        norm = classifier.normalization
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature = classifier.temperature  # the run's fitted temperature: calibrated probabilities

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        x = (x * (1 / 255) - self.mean) / self.std  # as Normalization does
        return (self.model(x).float() / self.temperature).softmax(dim=1)


def export_onnx(
    model_path: str | Path,
    out: str | Path | None = None,
    *,
    tta: bool | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export a checkpoint to ONNX, check it with ONNX Runtime against PyTorch, and only then write it.

    Args:
        model_path: a run directory or its model.safetensors.
        out: the .onnx file; default `model.onnx` (`model-tta.onnx` when the graph holds test-time views) beside
            the checkpoint.
        tta: None (default): the views the run's test evaluation used, so the file scores what the run printed;
            False: the image alone (fewer forward passes); True: the recipe's views, or the mirror and one-pixel
            shifts for a recipe without TTA.
        opset: ONNX opset version.

    Returns:
        An ExportResult with the check's figures.

    Raises:
        FileNotFoundError: if there is no checkpoint at `model_path`.
        ValueError: if the opset is out of range or ONNX Runtime disagrees with PyTorch (nothing is written).
    """
    if not 17 <= opset <= 23:
        raise ValueError(f"--opset must be between 17 and 23, got {opset}")
    weights = resolve_checkpoint(model_path)
    classifier = Classifier.load(weights, device="cpu", precision="fp32")
    level = classifier.tta_level(tta)
    out = Path(out) if out is not None else weights.with_name("model-tta.onnx" if level else "model.onnx")
    if out.suffix != ".onnx":
        raise ValueError(f"--out {out}: the file name must end in .onnx")
    writable_file(out, "--out")
    wrapper = _Exported(classifier, level).eval()
    size = classifier.image_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)  # batch 2: an example of batch 1 freezes N at 1
    with atomic_path(out) as tmp, _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
            optimize=True,
            verbose=False,
        )
        program.save(str(tmp))
        _write_metadata(tmp, classifier, level)
        source, images = _check_images(classifier)
        agree, diff = _compare(tmp, classifier, images, level)
        if agree < len(images) or not diff <= CHECK_TOLERANCE:
            raise ValueError(
                f"export check failed: ONNX Runtime and PyTorch agree on {agree}/{len(images)} top-1 classes, max "
                f"|prob diff| {diff:.1e} (limit {CHECK_TOLERANCE:g}); {out} was not written"
            )
    return ExportResult(out, opset, level, classifier.tta, size, len(classifier.class_names), source, len(images),
                        agree, diff)  # fmt: skip


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress notes and warnings (e.g. 'torchvision is not installed')."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _write_metadata(path: Path, classifier: Classifier, tta: int) -> None:
    """Store what an application needs to use the model in the file's metadata_props (all strings)."""
    import onnx

    meta = classifier.meta
    props = {
        "class_names": json.dumps(classifier.class_names),
        "image_size": str(classifier.image_size),
        "preset": str(meta.get("preset", "")),
        "model": str(meta.get("model", "")),
        "test_accuracy": str(meta.get("metrics", {}).get("test_accuracy", "")),
        "test_accuracy_tta": str(classifier.tta),  # the TTA level the run's test accuracy was measured with
        "tta": str(tta),  # the TTA level inside this graph
        "temperature": str(classifier.temperature),  # inside the graph: its probabilities are calibrated
        "input": "uint8 [N, H, W, 3] RGB, resized to image_size x image_size (bicubic, aspect ratio not kept)",
        "data_source": str(meta.get("data_source") or ""),
        "data_dir": str(meta.get("data_dir") or ""),
        "cifarlab_version": __version__,
    }
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _check_images(classifier: Classifier) -> tuple[str, np.ndarray]:
    """(description, (N, S, S, 3) uint8) images for the check: the model's test images when at hand, else generated."""
    count = sum(CHECK_BATCH_SIZES)
    size = classifier.image_size
    test = _local_test_split(classifier)
    if test is not None and len(test.labels):
        images = test.images[balanced_first(test.labels, count)].permute(0, 2, 3, 1).numpy()  # every class, not one
        reps = -(-count // len(images))
        return f"test images of {classifier.meta.get('data_source')}", np.tile(images, (reps, 1, 1, 1))[:count]
    rng = np.random.default_rng(0)
    # smooth colour fields plus noise: closer to photos than pure noise, so the classes actually compete
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.float32)
    smooth = np.kron(coarse, np.ones((1, -(-size // 4), -(-size // 4), 1), dtype=np.float32))[:, :size, :size]
    images = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    return "generated images (the test data is not at hand)", images


def _local_test_split(classifier: Classifier) -> Split | None:
    """The test split of the model's data when it can be read without a download, else None."""
    from cifarlab._download import cache_home
    from cifarlab.data import load_dataset

    source = classifier.meta.get("data_source") or "cifar10"
    data_dir = classifier.meta.get("data_dir")
    if source == "cifar10" and data_dir is None and not (cache_home() / "cifar10").is_dir():
        return None  # it would be downloaded
    if source != "cifar10" and not Path(source).is_dir():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_dataset(source, data_dir=data_dir, image_size=classifier.image_size, progress=False).test
    except (OSError, ValueError, KeyError):
        return None


def _compare(path: Path, classifier: Classifier, images: np.ndarray, tta: int) -> tuple[int, float]:
    """Run ONNX Runtime and PyTorch (fp32) at each check batch size: (top-1 agreements, max |prob diff|)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    agree, diff, start = 0, 0.0, 0
    for batch_size in CHECK_BATCH_SIZES:
        batch = images[start : start + batch_size]
        start += batch_size
        onnx_probs = session.run(None, {"images": batch})[0]
        torch_probs = classifier.predict(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(), tta=tta > 0)
        torch_probs = torch_probs.numpy()
        if onnx_probs.shape != torch_probs.shape:
            raise ValueError(f"export check failed: ONNX output {onnx_probs.shape} at batch {batch_size}")
        agree += int((onnx_probs.argmax(1) == torch_probs.argmax(1)).sum())
        diff = max(diff, float(np.abs(onnx_probs - torch_probs).max()))
    return agree, diff
