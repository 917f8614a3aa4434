"""Near-duplicate images: pairs that look alike, within the training images and from the test images to them.

Each image's embedding is perceptual and needs no model: the image averaged down to 16x16 pixels, each channel less
its own mean, scaled to unit length. The similarity of two images is then the correlation of their
small versions: 1 for a copy, near 1 for a re-encoding (JPEG), a change of brightness or contrast, or a resize, as
most of the near-duplicates ciFAIR (Barz & Denzler, 2020) found between CIFAR-10's test and training images are;
two different photographs of the same kind of thing rarely come close. (A trained model's features were not used:
they put every image of a class near every other, which is what a classifier learns.) Each image is paired with its
most similar other image; pairs at or above the threshold are kept, with the mean absolute pixel difference beside
them (0 for an exact copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cifarlab.data import Split

DEFAULT_THRESHOLD = 0.97  # correlation of the 16x16 versions: a copy re-encoded, brightened or resized stays above it
EMBEDDING_SIDE = 16
_CHUNK = 2048  # rows of the similarity matrix computed at once


@dataclass(frozen=True)
class DuplicatePair:
    """Two images that look alike: `first` from the split named by `kind`'s first word, `second` from train."""

    kind: str  # 'train-train' or 'test-train'
    first: int
    second: int
    similarity: float
    pixel_difference: float  # mean |a - b| over pixels and channels, 0..255


def embed(images: torch.Tensor, side: int = EMBEDDING_SIDE) -> torch.Tensor:
    """(N, 3 * side * side) unit-length embeddings of (N, 3, H, W) uint8 images (a flat image embeds as zeros)."""
    parts = []
    for start in range(0, len(images), _CHUNK):
        small = F.adaptive_avg_pool2d(images[start : start + _CHUNK].float(), side)
        centred = small - small.mean(dim=(2, 3), keepdim=True)  # per channel: a shared tint is not a likeness
        parts.append(F.normalize(centred.flatten(1), dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, 3 * side * side)


def nearest(queries: torch.Tensor, keys: torch.Tensor, same: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query row, the most similar key row and the similarity (cosine: the rows are unit vectors).

    `same`: the queries are the keys, so an image is not its own neighbour.
    """
    best_similarity = torch.empty(len(queries))
    best_index = torch.empty(len(queries), dtype=torch.int64)
    for start in range(0, len(queries), _CHUNK):
        similarity = queries[start : start + _CHUNK] @ keys.T
        if same:
            rows = torch.arange(similarity.shape[0])
            similarity[rows, rows + start] = -2.0
        best_similarity[start : start + _CHUNK], best_index[start : start + _CHUNK] = similarity.max(dim=1)
    return best_similarity, best_index


def find_duplicates(
    train_embedding: torch.Tensor,
    test_embedding: torch.Tensor,
    train: Split,
    test: Split,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[DuplicatePair]:
    """Pairs at or above `threshold`, train pairs first, most similar first within each kind.

    Each train image is paired with its nearest other train image (each pair once), each test image with its nearest
    train image.
    """
    pairs: list[DuplicatePair] = []
    similarity, index = nearest(train_embedding, train_embedding, same=True)
    seen: set[tuple[int, int]] = set()
    for i in torch.nonzero(similarity >= threshold).flatten().tolist():
        j = int(index[i])
        key = (min(i, j), max(i, j))
        if key not in seen:
            seen.add(key)
            pairs.append(_pair("train-train", key[0], key[1], float(similarity[i]), train, train))
    if len(test_embedding):
        similarity, index = nearest(test_embedding, train_embedding, same=False)
        for i in torch.nonzero(similarity >= threshold).flatten().tolist():
            pairs.append(_pair("test-train", i, int(index[i]), float(similarity[i]), test, train))
    return sorted(pairs, key=lambda p: (p.kind != "train-train", -p.similarity))


def _pair(kind: str, first: int, second: int, similarity: float, a: Split, b: Split) -> DuplicatePair:
    difference = (a.images[first].float() - b.images[second].float()).abs().mean().item()
    return DuplicatePair(kind, first, second, round(similarity, 5), round(difference, 2))
