"""Calibration: top-label expected calibration error, reliability bins and temperature scaling (Guo et al., 2017)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ECE_BINS = 15  # Guo et al. 2017: 15 equal-width confidence bins
MIN_CALIBRATION_IMAGES = 200  # fewer validation images fit a temperature to noise (or, all right, to T -> 0)
# Guo et al. 2017, "On Calibration of Modern Neural Networks", Table 1: CIFAR-10 ECE (%) before temperature scaling
GUO_2017_CIFAR10_ECE = {"ResNet-110": 4.60, "LeNet-5": 3.02}
_TINY = np.finfo(np.float32).tiny  # probabilities that underflowed to 0 keep a finite log


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its edges, how many images fell in it, their accuracy and mean confidence."""

    low: float
    high: float
    count: int
    accuracy: float  # NaN for an empty bin
    confidence: float  # NaN for an empty bin


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Group images by top-label confidence into `bins` equal-width bins over (0, 1].

    Args:
        probabilities: (N, K) class probabilities.
        labels: (N,) true classes.
        bins: number of bins.
    """
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot happen for a top label
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    result = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        accuracy = float(correct[members].mean()) if count else math.nan
        mean_confidence = float(confidence[members].mean()) if count else math.nan
        result.append(ReliabilityBin(float(edges[i]), float(edges[i + 1]), count, accuracy, mean_confidence))
    return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the count-weighted mean |accuracy - confidence| over the bins, as a fraction in [0, 1]."""
    table = reliability_bins(probabilities, labels, bins)
    total = sum(b.count for b in table)
    if total == 0:
        return math.nan
    return sum(b.count * abs(b.accuracy - b.confidence) for b in table if b.count) / total


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T (log p differs from them by a per-row constant)."""
    scaled = np.log(np.maximum(probabilities.astype(np.float64), _TINY)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def _nll(log_probabilities: np.ndarray, labels: np.ndarray, inverse_temperature: float) -> float:
    scaled = log_probabilities * inverse_temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of `labels` under softmax(log p / T).

    Fit it on a validation split, never on test. The NLL is convex in 1/T, so a golden-section search over
    log(1/T) in [-5, 5] finds the minimum.

    Raises:
        ValueError: for an empty split.
    """
    if len(labels) == 0:
        raise ValueError("temperature scaling needs at least one validation image")
    log_p = np.log(np.maximum(probabilities.astype(np.float64), _TINY))
    low, high = -5.0, 5.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(log_p, labels, math.exp(a)), _nll(log_p, labels, math.exp(b))
    for _ in range(80):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(log_p, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(log_p, labels, math.exp(b))
    return 1.0 / math.exp((low + high) / 2)
