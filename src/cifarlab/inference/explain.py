"""Grad-CAM (Selvaraju et al., ICCV 2017): where in an image a trained model found its evidence for a class.

For a class c and the last spatial feature map A (channels k, h x w) before the model pools or flattens it, each
channel's weight is the spatial mean of dy_c/dA_k (y_c the class's logit), and the map is ReLU(sum_k weight_k A_k):
the positive evidence for c. It is upsampled (bilinear) to the image's size and divided by its maximum, per image,
so 1 marks the strongest evidence and 0 none.

The feature map is found without knowing the family: the output of the last module, in the order the forward pass
finishes them, that is (N, C, h, w) with h * w > 1. For the seed's CNNs that is the end of `features`, for AirNet the
end of `groups`, for VGG16 at 32x32 its last conv stage before the final pooling. The model runs in fp32 and eval
mode on the image alone (no test-time views). On 32x32 images the maps are coarse: 2x2 to 8x8 cells, upsampled.
`explain_top` picks the classes as `predict` ranks them (with the run's test-time views), so a picture shows the
maps of the classes the prediction names.

No matplotlib here (serve imports this package): the colormap is a few lines.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from cifarlab._io.atomic import write_with
from cifarlab.evaluation.mistakes import MISTAKES_SHOWN, confident_mistakes
from cifarlab.inference.classifier import Classifier
from cifarlab.inference.images import decode_image

OVERLAY_ALPHA = 0.45  # weight of the colormap over the image
EXPLAIN_SUFFIX = "-explain.png"
VIEW_SIDE = 128  # `explanation_png` upscales (nearest) each panel to about this many pixels: 4x for 32x32
_CAPTION_HEIGHT = 18
_GAP = 6


class NoFeatureMapError(ValueError):
    """The model has no spatial feature map (a plain MLP): Grad-CAM has nothing to weigh."""


@dataclass(frozen=True)
class TopExplanation:
    """Grad-CAM maps of each image's most likely classes.

    Attributes:
        maps: (N, k, H, W) float32 in [0, 1], the classes' maps in order.
        classes: (N, k) int64 class indices, most likely first, as `Classifier.predict` ranks them.
        probabilities: (N, k) their probabilities as `Classifier.predict` gives them (test-time views, temperature).
    """

    maps: torch.Tensor
    classes: torch.Tensor
    probabilities: torch.Tensor


def explain(
    classifier: Classifier, images: torch.Tensor, classes: Sequence[int] | torch.Tensor, *, batch_size: int = 64
) -> torch.Tensor:
    """Grad-CAM maps of `classes` for (N, 3, H, W) uint8 images: (N, H, W) float32 in [0, 1], on the CPU.

    `classes` holds one class index per image; an (N, K) array of them gives (N, K, H, W) maps from one forward
    pass per batch (e.g. the predicted and the true class).

    Example:
        >>> clf = cifarlab.load("runs/proyecto4-20261128-101500")  # doctest: +SKIP
        >>> maps = explain(clf, images, clf.predict(images).argmax(1))  # doctest: +SKIP

    Raises:
        ValueError: for images that are not (N, 3, H, W) uint8, classes that do not fit them, or a model with no
            spatial feature map (a plain MLP).
    """
    _check_images(images)
    targets = (classes.detach().cpu().long() if isinstance(classes, torch.Tensor)
               else torch.as_tensor(np.asarray(classes), dtype=torch.int64))  # fmt: skip
    single = targets.dim() == 1
    targets = targets[:, None] if single else targets
    if targets.dim() != 2 or len(targets) != len(images):
        raise ValueError(f"expected one class (or one row of classes) per image: {len(images)} images, classes "
                         f"of shape {tuple(targets.shape)}")  # fmt: skip
    if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < len(classifier.class_names):
        raise ValueError(f"class indices must be in 0..{len(classifier.class_names) - 1}, got "
                         f"{int(targets.min())}..{int(targets.max())}")  # fmt: skip
    maps = [_batch(classifier, images[s : s + batch_size], targets[s : s + batch_size])
            for s in range(0, len(images), batch_size)]  # fmt: skip
    out = torch.cat(maps) if maps else torch.zeros((0, targets.shape[1], *images.shape[-2:]))
    return out[:, 0] if single else out


def explain_top(
    classifier: Classifier, images: torch.Tensor, k: int = 2, *, tta: bool | None = None, batch_size: int = 64
) -> TopExplanation:
    """Grad-CAM maps of each image's `k` most likely classes, ranked as `predict` ranks them.

    The classes and their probabilities are `Classifier.predict`'s, with `tta` as there (None: the views the run's
    test evaluation averaged, as `cifarlab predict` prints them), so the maps drawn are of the classes printed; the
    maps themselves come from the image alone.

    Raises:
        ValueError: as `explain`.
    """
    _check_images(images)
    k = max(1, min(k, len(classifier.class_names)))
    if not len(images):
        empty = torch.zeros((0, k), dtype=torch.int64)
        return TopExplanation(torch.zeros((0, k, *images.shape[-2:])), empty, empty.float())
    probabilities, classes = classifier.predict(images, batch_size=batch_size, tta=tta).float().topk(k, dim=1)
    return TopExplanation(explain(classifier, images, classes, batch_size=batch_size), classes, probabilities)


def explain_mistakes(
    classifier: Classifier, test_images: torch.Tensor, probabilities: Any, labels: Any, limit: int = MISTAKES_SHOWN
) -> dict[str, Any]:
    """Grad-CAM of the mistakes a report shows (`confident_mistakes`), for the predicted and the true class.

    Args:
        classifier: the run's model.
        test_images: (N, 3, H, W) uint8, the run's test split.
        probabilities: (N, K) its test probabilities, as predictions.npz holds them (row i: test image i).
        labels: (N,) the true classes.
        limit: the most mistakes explained.

    Returns:
        The arguments of `RunFiles.write_explanations`: `heatmaps` (M, 2, H, W), `test_index` (M,), `classes`
        (M, 2) (predicted, true), `class_names`, and `note`, which says why there are no maps for a model without a
        spatial feature map (then M = 0).
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    rows = confident_mistakes(probabilities, labels, limit)
    classes = np.stack([probabilities[rows].argmax(axis=1), labels[rows]], axis=1).astype(np.int64)
    images = test_images[torch.as_tensor(rows, device=test_images.device)]
    note = ""
    try:
        heatmaps = explain(classifier, images, classes)
    except NoFeatureMapError as error:
        heatmaps, rows, classes, note = torch.zeros((0, 2, *images.shape[-2:])), rows[:0], classes[:0], str(error)
    return {"heatmaps": heatmaps, "test_index": rows, "classes": classes, "class_names": classifier.class_names,
            "note": note}  # fmt: skip


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")


def _batch(classifier: Classifier, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Maps (N, K, H, W) on the CPU of the (N, K) `classes`."""
    model, device = classifier.model, classifier.device
    inputs = classifier.normalization(images.to(device).float())
    if classifier.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            site = _feature_site(model, inputs[:1])
            if site is None:
                raise NoFeatureMapError(f"model '{_model_name(classifier)}' has no spatial feature map to explain "
                                        "(Grad-CAM needs a layer whose output is still an image before the pooling "
                                        "or flatten)")  # fmt: skip
            with _capture(*site) as captured:
                logits = model(inputs.detach().requires_grad_(True)).float()  # the input's grad keeps a graph
            feature = captured[0]  # (N, C, h, w) fp32: no autocast
            targets = classes.to(device)
            maps = []
            for j in range(targets.shape[1]):
                score = logits.gather(1, targets[:, j : j + 1]).sum()  # images are independent in eval mode
                (grad,) = torch.autograd.grad(score, feature, retain_graph=j + 1 < targets.shape[1], allow_unused=True)
                grad = torch.zeros_like(feature) if grad is None else grad
                weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k^c: global-average-pooled gradients
                maps.append(F.relu((weights * feature).sum(dim=1, keepdim=True)).detach())
    finally:
        model.train(was_training)
    cam = F.interpolate(torch.cat(maps, dim=1).float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    return cam.clamp_(0, 1).cpu()


def _feature_site(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, int] | None:
    """The module, and which of its calls, whose output is the last (N, C, h, w) map with h * w > 1 (one probe image).

    Forward hooks fire as each module returns, so a container fires after its children: the last to fire is the
    end of the feature stack (`features`, `groups`), not a layer inside it.
    """
    calls: dict[nn.Module, int] = {}
    last: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _: Any, output: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1:
            last[:] = [(module, calls[module])]

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return last[0] if last else None


@contextlib.contextmanager
def _capture(module: nn.Module, call: int) -> Iterator[list[torch.Tensor]]:
    """Keep the output of `module`'s `call`-th call; the rest of the model gets a copy."""
    captured: list[torch.Tensor] = []
    calls = [0]

    def keep(_: nn.Module, __: Any, output: torch.Tensor) -> torch.Tensor | None:
        calls[0] += 1
        if calls[0] != call:
            return None
        captured.append(output)
        return output.clone()  # a later in-place op (ReLU(inplace=True)) changes the copy, not the kept map

    handle = module.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


def _model_name(classifier: Classifier) -> str:
    return str(classifier.meta.get("model") or type(classifier.model).__name__)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) RGB in [0, 1] along matplotlib's 'jet': dark blue, cyan, yellow, dark red."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1)[..., None]
    peaks = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where red, green and blue are full
    return np.clip(1.5 - np.abs(4 * (v - peaks)), 0, 1)


def overlay(image: Any, heatmap: Any, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """A (3, H, W) uint8 image with a heatmap in [0, 1] blended over it in 'jet': (H, W, 3) uint8.

    A heatmap of another size is resized to the image's (bilinear).
    """
    pixels = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
    heat = np.asarray(heatmap.float().cpu() if hasattr(heatmap, "cpu") else heatmap, dtype=np.float32)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] != 3 or heat.ndim != 2:
        raise ValueError(f"expected a (3, H, W) uint8 image and an (H, W) heatmap, got {pixels.shape} {pixels.dtype} "
                         f"and {heat.shape}")  # fmt: skip
    height, width = pixels.shape[1:]
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
    blended = (1 - alpha) * pixels.transpose(1, 2, 0).astype(np.float32) + alpha * 255 * colormap(heat)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def explanation_png(image: np.ndarray, maps: np.ndarray, captions: Sequence[str]) -> bytes:
    """The image and its maps' overlays side by side, upscaled (nearest) to about `VIEW_SIDE` pixels, captioned.

    Args:
        image: (3, H, W) uint8.
        maps: (k, H, W) heatmaps in [0, 1].
        captions: k + 1 lines: the image's, then each map's.
    """
    panels = [np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0)), *(overlay(image, m) for m in maps)]
    height, width = panels[0].shape[:2]
    scale = max(1, round(VIEW_SIDE / max(height, width)))
    side_w, side_h = width * scale, height * scale
    canvas = Image.new("RGB", (len(panels) * (side_w + _GAP) + _GAP, side_h + 2 * _GAP + _CAPTION_HEIGHT), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=12)  # a bitmap font where FreeType is missing
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        x = _GAP + i * (side_w + _GAP)
        canvas.paste(Image.fromarray(panel).resize((side_w, side_h), Image.Resampling.NEAREST), (x, _GAP))
        while caption and draw.textlength(caption, font=font) > side_w:
            caption = caption[:-2] + "…" if len(caption) > 1 else ""
        draw.text((x, side_h + _GAP + 2), caption, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def explain_file(classifier: Classifier, path: str | Path, top: int = 2, *, tta: bool | None = None) -> bytes:
    """`explanation_png` of one image file, decoded as `predict` decodes it, for its `top` most likely classes.

    `tta` as `predict`'s (None: the views the run's recipe evaluated with), so that the classes drawn are the ones
    `predict` printed with the same option.
    """
    pixels = decode_image(path, classifier.image_size)  # (S, S, 3)
    image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    found = explain_top(classifier, image[None], top, tta=tta)
    names = classifier.class_names
    captions = ["input", *(f"{names[c]}: {p:.2f}" for c, p in zip(found.classes[0].tolist(),
                                                                found.probabilities[0].tolist()))]  # fmt: skip
    return explanation_png(image.numpy(), found.maps[0].numpy(), captions)


def check_explain_target(model: str | Path, out_dir: str | Path) -> None:
    """Before loading a model for `predict --explain`: it must have gradients (not .onnx), DIR must be a folder.

    Raises:
        ValueError: one line naming --explain.
    """
    if Path(model).suffix.lower() == ".onnx":
        raise ValueError(f"--explain needs gradients, which ONNX Runtime does not give: use the run directory (or "
                         f"its model.safetensors) that {Path(model).name} was exported from")  # fmt: skip
    _check_out_dir(out_dir)


def _check_out_dir(out_dir: str | Path) -> None:
    for folder in (Path(out_dir), *Path(out_dir).parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"--explain {out_dir}: {folder} is a file, not a folder")
            break


class ExplanationWriter:
    """Writes `predict --explain` pictures: DIR/<stem>-explain.png, the image and its top two classes' maps.

    Two files of the same stem (photos/a/cat.png, photos/b/cat.png) get <stem>-explain.png, <stem>-2-explain.png.

    Raises:
        ValueError: for a model without gradients (ONNX), or a DIR that cannot be made.
    """

    def __init__(self, classifier: Any, out_dir: str | Path, top: int = 2, *, tta: bool | None = None) -> None:
        if not isinstance(classifier, Classifier):
            raise ValueError("--explain needs a PyTorch model (a run directory or its model.safetensors), not ONNX")
        _check_out_dir(out_dir)
        self.classifier, self.out_dir, self.top, self.tta = classifier, Path(out_dir), top, tta
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--explain {out_dir}: cannot make the folder ({error.strerror or error})") from None
        self._taken: set[str] = set()

    def write(self, path: str | Path) -> Path:
        """Explain one image file (decoded as `predict` decodes it); returns the PNG written."""
        png = explain_file(self.classifier, path, self.top, tta=self.tta)
        target = self._name(Path(path).stem)
        write_with(target, lambda tmp: tmp.write_bytes(png))
        return target

    def _name(self, stem: str) -> Path:
        name, n = f"{stem}{EXPLAIN_SUFFIX}", 1
        while name in self._taken:
            n += 1
            name = f"{stem}-{n}{EXPLAIN_SUFFIX}"
        self._taken.add(name)
        return self.out_dir / name
