"""Near-duplicate images: the same shot twice, within the training images and from the test images to them.

Found in two stages, as image retrieval does it:

1. **Candidates.** Each image's `CANDIDATES` nearest training images under each of two embeddings. The frame
   embedding needs no model: the image averaged down to 16x16 pixels, each channel less its own mean, scaled to unit
   length; it finds copies, re-encodings, brightness, contrast and colour changes and resizes. The network's
   descriptors, when a trained network is at hand (the audit's first fold model; `Classifier.descriptors`), are a
   middle feature map pooled over its positions, image and mirror averaged: they keep the same shot shifted or
   cropped next to itself, where the frame loses it, and still tell two photographs of a class apart (the head's
   features, trained to put a class together, do not).
2. **Alignment.** Each candidate pair is compared as template matching does: the central 20x20 pixels of one image
   (of its 32x32 version), cut after zooming in by 1, 1.14 and 1.33 (the central 32, 28 and 24 pixels), are slid over
   every position of the other (shifts of up to 6 pixels), and the other way round, both blurred by a pixel first
   (the detail a rescale or a re-encoding loses is not compared). At each position the similarity is the normalized
   correlation over the three channels, each less its own mean (a change of brightness, contrast or colour balance
   leaves it near 1); the pair's similarity is the best position's. So the same shot shifted, cropped, rescaled,
   recoloured or re-encoded comes out near 1, and two different photographs of the same kind of thing, even the
   nearest in features, stay lower: the figures for both are in docs/audit.md.

Each image is paired with its most similar candidate; pairs at or above the threshold are kept, with the mean
absolute pixel difference of the two frames beside them (0 for an exact copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cifarlab.data import Split

DEFAULT_THRESHOLD = 0.97  # aligned correlation: made near-duplicates and different photographs at it, docs/audit.md
EMBEDDING_SIDE = 16
CANDIDATES = 5  # nearest training images per image and embedding, then aligned
ALIGN_SIDE = 32  # images are aligned at 32x32 (resized when they are not)
TEMPLATE = 20  # side of the central patch slid over the other image: shifts of up to (32 - 20) / 2 pixels
ZOOMS = (1.0, 1.14, 1.33)  # the patch is cut from the central 32, 28 or 24 pixels, resized back to 32
BLUR_SIGMA = 1.0  # pixels (at 32x32) of the Gaussian blur both images get before they are compared
_CHUNK = 2048  # rows of a similarity matrix computed at once
_PAIR_CHUNK = 512  # pairs aligned at once
_FLAT = 4.0  # variance (in grey levels squared) under which a patch counts as flat


@dataclass(frozen=True)
class DuplicatePair:
    """Two images that look alike: `first` from the split named by `kind`'s first word, `second` from train."""

    kind: str  # 'train-train' or 'test-train'
    first: int
    second: int
    similarity: float
    pixel_difference: float  # mean |a - b| over pixels and channels, 0..255


def embed(images: torch.Tensor, side: int = EMBEDDING_SIDE) -> torch.Tensor:
    """(N, 3 * side * side) unit-length frame embeddings of (N, 3, H, W) uint8 images (a flat image: zeros)."""
    parts = []
    for start in range(0, len(images), _CHUNK):
        small = F.adaptive_avg_pool2d(images[start : start + _CHUNK].float(), side)
        centred = small - small.mean(dim=(2, 3), keepdim=True)  # per channel: a shared tint is not a likeness
        parts.append(F.normalize(centred.flatten(1), dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, 3 * side * side)


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, same: bool) -> torch.Tensor:
    """(N, min(k, keys)) indices of each query row's most similar key rows (cosine: rows of unit length or zero).

    `same`: the queries are the keys, so an image is not its own neighbour.
    """
    k = min(k, len(keys) - int(same))
    found = torch.empty(len(queries), max(k, 0), dtype=torch.int64)
    if k <= 0:
        return found
    queries, keys = F.normalize(queries.float(), dim=1), F.normalize(keys.float(), dim=1)
    for start in range(0, len(queries), _CHUNK):
        similarity = queries[start : start + _CHUNK] @ keys.T
        if same:
            rows = torch.arange(similarity.shape[0])
            similarity[rows, rows + start] = -2.0
        found[start : start + _CHUNK] = similarity.topk(k, dim=1).indices
    return found


def aligned_similarity(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(P,) similarity of each pair of (P, 3, H, W) uint8 images: the best aligned correlation (module docstring)."""
    best = torch.empty(len(first))
    for start in range(0, len(first), _PAIR_CHUNK):
        a = _blur(_align_size(first[start : start + _PAIR_CHUNK]))
        b = _blur(_align_size(second[start : start + _PAIR_CHUNK]))
        fields = [_Field(a), _Field(b)]
        score = torch.full((len(a),), -1.0)
        for zoom in ZOOMS:
            score = torch.maximum(score, fields[1].match(_zoom(a, zoom)))
            score = torch.maximum(score, fields[0].match(_zoom(b, zoom)))
        best[start : start + _PAIR_CHUNK] = score
    return best


def find_duplicates(
    train: Split,
    test: Split,
    threshold: float = DEFAULT_THRESHOLD,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
    within_train: bool = True,
) -> list[DuplicatePair]:
    """Pairs at or above `threshold`, train pairs first, most similar first within each kind.

    Each train image is paired with its most similar other train image (each pair once; not when `within_train` is
    False), each test image with its most similar train image, among the candidates of `features` (train's and
    test's, as `Classifier.descriptors` gives them) and of the frame embedding.
    """
    frames = (embed(train.images), embed(test.images))
    embeddings = [frames] if features is None else [frames, features]
    pairs: list[DuplicatePair] = []
    seen: set[tuple[int, int]] = set()
    within = _best_matches(train.images, train.images, embeddings, 0, same=True) if within_train else []
    for first, second, similarity in within:
        key = (min(first, second), max(first, second))
        if similarity >= threshold and key not in seen:
            seen.add(key)
            pairs.append(_pair("train-train", key[0], key[1], similarity, train, train))
    if len(test):
        for first, second, similarity in _best_matches(test.images, train.images, embeddings, 1, same=False):
            if similarity >= threshold:
                pairs.append(_pair("test-train", first, second, similarity, test, train))
    return sorted(pairs, key=lambda p: (p.kind != "train-train", -p.similarity))


def _best_matches(
    queries: torch.Tensor,
    keys: torch.Tensor,
    embeddings: list[tuple[torch.Tensor, torch.Tensor]],
    side: int,
    same: bool,
) -> list[tuple[int, int, float]]:
    """(query, key, similarity) of each query's best aligned candidate; `side` picks the queries' embedding."""
    if len(queries) == 0 or len(keys) <= int(same):
        return []
    candidates = torch.cat([nearest(pair[side], pair[0], CANDIDATES, same) for pair in embeddings], dim=1)
    candidates = torch.sort(candidates, dim=1).values  # the same key from two embeddings is aligned once
    fresh = torch.ones_like(candidates, dtype=torch.bool)
    fresh[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    query_index, slot = torch.nonzero(fresh, as_tuple=True)
    key_index = candidates[query_index, slot]
    similarity = torch.cat([_similarity(queries[q], keys[k]) for q, k in zip(query_index.split(_CHUNK * 4),
                                                                            key_index.split(_CHUNK * 4))])  # fmt: skip
    scores = torch.full(candidates.shape, -2.0)  # a repeated key keeps -2: its first slot holds its similarity
    scores[query_index, slot] = similarity
    best, at = scores.max(dim=1)  # the first of equals: the lowest key index
    keys_found = candidates.gather(1, at[:, None])[:, 0]
    return list(zip(range(len(queries)), keys_found.tolist(), best.tolist()))


def _similarity(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """`aligned_similarity`, and 1 for exact copies (a flat image's copy has no correlation to measure)."""
    copies = (first == second).flatten(1).all(dim=1)
    return torch.where(copies, 1.0, aligned_similarity(first, second))


def _align_size(images: torch.Tensor) -> torch.Tensor:
    images = images.float()
    if images.shape[-1] == ALIGN_SIDE and images.shape[-2] == ALIGN_SIDE:
        return images
    return F.interpolate(images, size=(ALIGN_SIDE, ALIGN_SIDE), mode="bilinear", antialias=True, align_corners=False)


def _blur(images: torch.Tensor) -> torch.Tensor:
    """A Gaussian blur of BLUR_SIGMA pixels: detail a rescale or a re-encoding loses is not compared."""
    radius = 2
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / BLUR_SIGMA) ** 2)
    taps = (taps / taps.sum()).tolist()
    side = images.shape[-1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = sum(w * padded[..., i : i + side] for i, w in enumerate(taps))  # separable: along x, then along y
    return sum(w * rows[..., i : i + side, :] for i, w in enumerate(taps))


def _zoom(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """The central 1/zoom of each image, resized back to the full side."""
    if zoom == 1.0:
        return images
    side = images.shape[-1]
    kept = round(side / zoom)
    offset = (side - kept) // 2
    centre = images[:, :, offset : offset + kept, offset : offset + kept]
    return F.interpolate(centre, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


class _Field:
    """Images that patches are slid over: their spectra and window energies, computed once for every patch."""

    def __init__(self, images: torch.Tensor) -> None:
        self.side = images.shape[-1]
        self.positions = self.side - TEMPLATE + 1
        images = images - images.mean(dim=(2, 3), keepdim=True)  # smaller numbers; the correlation is unchanged
        self.spectrum = torch.fft.rfft2(images)
        sums, squares = _window_sums(images), _window_sums(images * images)  # (P, C, m, m)
        self.energy = (squares - sums * sums / TEMPLATE**2).sum(dim=1)  # each window's variance times its area
        self.floor = _FLAT * TEMPLATE**2 * images.shape[1]  # a patch or window flatter than this has no pattern

    def match(self, source: torch.Tensor) -> torch.Tensor:
        """(P,) best normalized correlation of each source's central TEMPLATE x TEMPLATE patch over its image.

        The cross-correlation at every position comes from the Fourier transform (no wrap-around at the positions
        kept); each window's energy from running sums.
        """
        offset = (self.side - TEMPLATE) // 2
        patch = source[:, :, offset : offset + TEMPLATE, offset : offset + TEMPLATE]
        patch = patch - patch.mean(dim=(2, 3), keepdim=True)
        patch_energy = patch.pow(2).sum(dim=(1, 2, 3))
        spectrum = self.spectrum * torch.fft.rfft2(patch, s=(self.side, self.side)).conj()
        cross = torch.fft.irfft2(spectrum, s=(self.side, self.side)).sum(dim=1)[:, : self.positions, : self.positions]
        denominator = (patch_energy.clamp_min(self.floor)[:, None, None] * self.energy.clamp_min(self.floor)).sqrt()
        return (cross / denominator).flatten(1).amax(dim=1).clamp(-1.0, 1.0)


def _window_sums(images: torch.Tensor) -> torch.Tensor:
    """(P, C, m, m) sums of every TEMPLATE x TEMPLATE window of (P, C, n, n) images (m = n - TEMPLATE + 1)."""
    table = F.pad(images, (1, 0, 1, 0)).cumsum(dim=2).cumsum(dim=3)
    t = TEMPLATE
    return table[:, :, t:, t:] - table[:, :, :-t, t:] - table[:, :, t:, :-t] + table[:, :, :-t, :-t]


def _pair(kind: str, first: int, second: int, similarity: float, a: Split, b: Split) -> DuplicatePair:
    difference = (a.images[first].float() - b.images[second].float()).abs().mean().item()
    return DuplicatePair(kind, first, second, round(similarity, 5), round(difference, 2))
