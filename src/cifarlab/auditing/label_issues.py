"""Which labels look wrong: confident learning (Northcutt et al., JAIR 2021) on out-of-fold probabilities.

`cleanlab.filter.find_label_issues` estimates, per pair of classes, how many images of one were labelled as the
other (the confident joint, with per-class confidence thresholds) and flags that many of the least likely labels;
the flags are ranked by cleanlab's label quality score. The baseline it is measured against ranks every image by its
loss alone (the probability the model gives its label), with no per-class thresholds and no count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKED_BY = "self_confidence"  # cleanlab's label quality score: the probability given to the image's label


@dataclass(frozen=True)
class LabelIssues:
    """Flagged images, worst first.

    Attributes:
        index: (M,) indices into the audited images.
        score: (M,) cleanlab's label quality score of each (0: surely mislabelled, 1: surely right).
        suggested: (M,) the class the out-of-fold model prefers.
    """

    index: np.ndarray
    score: np.ndarray
    suggested: np.ndarray


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> LabelIssues:
    """Confident learning's flags over out-of-fold `probabilities` (N, K) for the given `labels` (N,)."""
    from cleanlab.filter import find_label_issues as cleanlab_find  # the audit extra
    from cleanlab.rank import get_label_quality_scores

    index = np.asarray(cleanlab_find(labels, probabilities, return_indices_ranked_by=RANKED_BY, n_jobs=1), np.int64)
    quality = get_label_quality_scores(labels, probabilities, method=RANKED_BY)
    return LabelIssues(index=index, score=quality[index], suggested=probabilities[index].argmax(axis=1))


def loss_ranking(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Every image's index, highest cross-entropy loss of its label first (the baseline)."""
    given = probabilities[np.arange(len(labels)), labels]
    return np.argsort(given, kind="stable")  # -log p ascending in p


def recall_at(ranking: np.ndarray, planted: np.ndarray, k: int | None = None) -> float:
    """The share of `planted` indices among the first `k` of `ranking` (default: as many as were planted)."""
    k = len(planted) if k is None else k
    return len(np.intersect1d(ranking[:k], planted)) / max(len(planted), 1)
