"""Which mistakes a report shows: the wrong test predictions, most confident first (and the run explains those)."""

from __future__ import annotations

import numpy as np

MISTAKES_SHOWN = 32


def confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, limit: int = MISTAKES_SHOWN) -> np.ndarray:
    """Rows of the wrong predictions, highest top-class probability first, at most `limit`.

    The report's grid of mistakes and the end of a run (which saves their Grad-CAM maps) both select with this, so
    the maps saved are those of the images shown. Ties keep the rows' order.

    Args:
        probabilities: (N, K) class probabilities.
        labels: (N,) true classes.
        limit: the most rows returned.

    Returns:
        (M,) int64 row numbers into `probabilities`, M <= limit.
    """
    probabilities = np.asarray(probabilities)
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != np.asarray(labels))
    confidence = probabilities.max(axis=1)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:limit].astype(np.int64)
