"""Training losses: PyTorch's cross-entropy from logits and Keras' probability-space cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cifarlab.config import TrainConfig
from cifarlab.training.losses import KERAS_EPSILON, keras_probs_cross_entropy, training_loss


def test_equals_cross_entropy_where_nothing_is_clipped():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    labels = torch.arange(64) % 10
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    assert torch.softmax(logits, 1).min() > KERAS_EPSILON  # no probability reaches the clip
    keras = keras_probs_cross_entropy(a, labels)
    torch_ = F.cross_entropy(b, labels)
    keras.backward()
    torch_.backward()
    assert keras.item() == pytest.approx(torch_.item(), rel=1e-6)
    assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7)


def test_sample_with_every_other_class_below_epsilon_has_a_loss_floor_and_no_gradient():
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0]], requires_grad=True)  # others at e^-30 ~ 1e-13
    loss = keras_probs_cross_entropy(logits, torch.tensor([0]))
    loss.backward()
    # clipped to 1 - eps and eps: loss = log(1 - eps + 3 eps) - log(1 - eps) = 3e-7 (float32: 3.6e-7), not 3 e^-30
    assert 2e-7 < loss.item() < 5e-7
    assert F.cross_entropy(logits.detach(), torch.tensor([0])).item() < 1e-12
    assert torch.count_nonzero(logits.grad) == 0


def test_confidently_wrong_sample_is_capped_and_gives_no_gradient():
    logits = torch.tensor([[0.0, 30.0, 0.0]], requires_grad=True)  # the target, class 0, at e^-30
    loss = keras_probs_cross_entropy(logits, torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(KERAS_EPSILON), rel=1e-2)  # 16.1, where logits give 30
    assert F.cross_entropy(logits.detach(), torch.tensor([0])).item() == pytest.approx(30.0, rel=1e-3)
    assert logits.grad.abs().max() < 1e-6


def test_bf16_probabilities_round_a_confident_target_to_one_yet_the_others_still_pull():
    # p_target ~ 0.999: rounds to 1.0 in bf16, so it is clipped; renormalising over the other classes keeps a gradient
    logits = torch.tensor([[7.0, 0.0, 0.0]], dtype=torch.bfloat16)
    assert torch.softmax(logits, 1)[0, 0].item() == 1.0
    leaf = logits.clone().requires_grad_()
    keras = keras_probs_cross_entropy(leaf, torch.tensor([0]))
    keras.backward()
    reference = logits.float().requires_grad_()
    F.cross_entropy(reference, torch.tensor([0])).backward()
    assert keras.dtype == torch.float32
    assert keras.item() == pytest.approx(2 * math.exp(-7.0), rel=0.05)  # the other classes' mass, as the true loss
    assert torch.allclose(leaf.grad.float(), reference.grad, rtol=0.05, atol=1e-4)


def test_training_loss_follows_the_recipe():
    logits = torch.tensor([[2.0, 0.0], [0.0, 40.0]])
    labels = torch.tensor([0, 0])
    logits_loss = training_loss(logits, labels, TrainConfig())
    keras_loss = training_loss(logits, labels, TrainConfig(loss="keras_probs"))
    assert logits_loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert keras_loss.item() == pytest.approx(keras_probs_cross_entropy(logits, labels).item())
    assert keras_loss.item() < logits_loss.item() - 10  # the second sample is capped at -log(1e-7)
    smoothed = training_loss(logits, labels, TrainConfig(label_smoothing=0.1))
    assert smoothed.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item())


def test_recipe_rejects_an_unknown_loss_and_label_smoothing_with_keras_probs():
    with pytest.raises(ValueError, match="train.loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(loss="keras_probs", label_smoothing=0.1)


def test_trainer_steps_on_the_configured_loss(tiny_dataset):
    from cifarlab.config import DataConfig, RunConfig
    from cifarlab.training.trainer import Trainer

    config = RunConfig(
        model="proyecto1",
        data=DataConfig(val_size=0),
        train=TrainConfig(epochs=1, batch_size=32, loss="keras_probs"),
        device="cpu",
        precision="bf16",
        quiet=True,
    )
    trainer = Trainer(config, tiny_dataset)
    inputs, labels = next(iter(trainer.train_loader))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = keras_probs_cross_entropy(trainer.model(inputs), labels)
    loss, _ = trainer.train_step(inputs, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
