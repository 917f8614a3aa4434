"""Accuracy under the CIFAR-10-C corruptions: the clean test split, then each corruption at each severity.

Anchors (AugMix, Hendrycks et al., ICLR 2020, CIFAR-10-C): standard training of four architectures gives about
27-31 % mean corruption error; AugMix about 11-15 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Protocol

from cifarlab.data.dataset import Split
from cifarlab.progress import progress_bar

# AugMix (ICLR 2020): CIFAR-10-C mean corruption error (%) of four networks, as the paper's table gives it (rounded)
AUGMIX_2020_CIFAR10C_ERROR = {"standard training": (27, 31), "AugMix": (11, 15)}


class _Evaluates(Protocol):
    def evaluate(self, split: Split, batch_size: int = ...) -> Any: ...


def corruption_accuracy(
    classifier: _Evaluates,
    split: Split,
    corruptions: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy of `classifier` on `split` clean and under each corruption and severity (deterministic per seed).

    Returns:
        {'clean': accuracy, 'accuracy': {corruption: {severity (str): accuracy}}, 'mean_corruption_accuracy':
        the mean over every corruption and severity measured, 'images': N, 'seed': seed}; accuracies in [0, 1].
    """
    from cifarlab.evaluation.corruptions import corrupt  # scipy: the robustness extra

    results: dict[str, dict[str, float]] = {}
    clean = classifier.evaluate(split).accuracy
    cells = [(name, severity) for name in corruptions for severity in severities]
    with progress_bar(total=len(cells), desc="corruptions", unit="set", disable=not progress) as bar:
        for name, severity in cells:
            # one seed per (corruption, severity), so a subset of them reproduces the full table's numbers
            images = corrupt(split.images.cpu(), name, severity, seed=_cell_seed(seed, name, severity))
            accuracy = classifier.evaluate(Split(images, split.labels.cpu())).accuracy
            results.setdefault(name, {})[str(severity)] = accuracy
            bar.set_postfix_str(f"{name} s{severity}: {accuracy:.3f}")
            bar.update(1)
    values = [value for row in results.values() for value in row.values()]
    return {
        "clean": clean,
        "accuracy": results,
        "mean_corruption_accuracy": statistics.fmean(values) if values else None,
        "images": len(split),
        "seed": seed,
    }


def _cell_seed(seed: int, name: str, severity: int) -> int:
    """A seed of its own for each corruption and severity, stable across runs and Python processes."""
    return (seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name)) * 7 + severity) % 2**31


def robustness_table(result: dict[str, Any]) -> str:
    """The terminal table: one row per corruption, one column per severity, and the means (percent)."""
    rows = result["accuracy"]
    severities = sorted({int(s) for row in rows.values() for s in row})
    width = max([len("corruption"), *map(len, rows)])
    lines = [f"{'corruption':<{width}}  " + "  ".join(f"{'s' + str(s):>6}" for s in severities) + "    mean"]
    for name, row in rows.items():
        cells = [f"{row[str(s)] * 100:6.2f}" if str(s) in row else f"{'-':>6}" for s in severities]
        lines.append(f"{name:<{width}}  " + "  ".join(cells) + f"  {statistics.fmean(row.values()) * 100:6.2f}")
    mean = result["mean_corruption_accuracy"]
    lines.append(f"clean accuracy {result['clean'] * 100:.2f} %; mean corruption accuracy "
                 f"{mean * 100:.2f} % (error {100 - mean * 100:.2f} %) on {result['images']} test images")  # fmt: skip
    low, high = AUGMIX_2020_CIFAR10C_ERROR["standard training"]
    augmix = AUGMIX_2020_CIFAR10C_ERROR["AugMix"]
    lines.append(f"AugMix (ICLR 2020), CIFAR-10-C mean error of four networks: standard training about {low}-{high} %, "
                 f"AugMix about {augmix[0]}-{augmix[1]} %")  # fmt: skip
    return "\n".join(lines) + "\n"
