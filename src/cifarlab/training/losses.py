"""Training losses: cross-entropy from the logits, or as Keras computes it from softmax probabilities.

Keras' `sparse_categorical_crossentropy` on a `Dense(10, activation='softmax')` output normally finds the logits the
softmax cached (`_keras_logits`) and computes the same function as `F.cross_entropy`. Under the `mixed_bfloat16`
policy it cannot: the softmax outputs bf16 probabilities, the loss casts them to float32 first (`Loss.__call__`,
`convert_to_tensor(y_pred, dtype='float32')`), and the cast tensor carries no cached logits and is not a Softmax op.
The loss then takes its probability path (`keras/src/backend/tensorflow/nn.py`, `sparse_categorical_crossentropy`):
clip to [epsilon, 1 - epsilon], log, and `sparse_softmax_cross_entropy_with_logits` on those log-probabilities.
`keras_probs_cross_entropy` is that path, so that a cifarlab run can train on the very loss such a Keras run trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cifarlab.config import TrainConfig

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the clip of the probability path


def keras_probs_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float = KERAS_EPSILON
) -> torch.Tensor:
    """Mean cross-entropy computed from clipped softmax probabilities, as Keras' probability path does.

    The softmax runs in the logits' dtype (bf16 under bf16 autocast, as a `mixed_bfloat16` Keras model's output
    layer), its probabilities are cast to float32, clipped to [epsilon, 1 - epsilon] and logged; the loss is the
    cross-entropy of the softmax of those log-probabilities, which renormalises the clipped probabilities. A clipped
    probability passes no gradient: a target probability that rounds to 1 in bf16 (above about 0.998) stops pulling,
    and once every other class is below `epsilon` the sample gives no gradient at all.

    Args:
        logits: (batch, classes) scores, in any float dtype.
        labels: (batch,) class indices.
        epsilon: the clip (Keras' `backend.epsilon()`, 1e-7).

    Returns:
        The batch's mean loss, a float32 scalar.
    """
    probs = torch.softmax(logits, dim=1).float()
    log_probs = probs.clamp(epsilon, 1.0 - epsilon).log()
    return F.cross_entropy(log_probs, labels)


def training_loss(logits: torch.Tensor, labels: torch.Tensor, recipe: TrainConfig) -> torch.Tensor:
    """The recipe's training loss (`train.loss`) of a batch: 'logits' (PyTorch's) or 'keras_probs' (see module)."""
    if recipe.loss == "keras_probs":
        return keras_probs_cross_entropy(logits, labels)
    return F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
