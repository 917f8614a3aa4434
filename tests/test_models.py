import math

import pytest
import torch

from cifarlab.models import count_params, create_model, list_models
from cifarlab.models.keras_cnn import KERAS_BN_EPSILON, KERAS_BN_MOMENTUM
from cifarlab.presets import get_preset, list_presets

# The counts Keras' model.summary() prints for the seed's ten steps (issue table; P6/P9 with the Dense(10) added).
SEED_COUNTS = {
    "proyecto1": (282_250, 282_250, 0),
    "proyecto2": (550_570, 550_570, 0),
    "proyecto3": (567_082, 567_082, 0),
    "proyecto4": (551_978, 551_274, 704),
    "proyecto5": (816_042, 815_082, 960),
    "proyecto6": (3_252_042, 3_250_122, 1_920),
    "proyecto7": (8_781_962, 8_779_146, 2_816),
    "proyecto8": (8_781_962, 8_779_146, 2_816),
    "proyecto9": (3_252_042, 3_250_122, 1_920),
}


@pytest.mark.parametrize("preset", sorted(SEED_COUNTS))
def test_seed_presets_have_the_seeds_parameter_counts(preset):
    counts = count_params(create_model(get_preset(preset).config.model))
    assert (counts.total, counts.trainable, counts.non_trainable) == SEED_COUNTS[preset]


def test_every_seed_step_is_a_preset():
    assert set(SEED_COUNTS) <= set(list_presets("proyecto*"))


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (e.g. AirNet's whitening filters, BatchNorm scales)
            assert p.grad is None, pname
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_unknown_model_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean proyecto1"):
        create_model("proyeto1")


def test_none_overrides_keep_defaults():
    model = create_model("proyecto1", num_classes=None)
    assert model.head.out_features == 10


def test_keras_batchnorm_settings_and_layer_order():
    model = create_model("proyecto4")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 4
    assert all(m.momentum == KERAS_BN_MOMENTUM and m.eps == KERAS_BN_EPSILON for m in norms)
    kinds = [type(m).__name__ for m in model.features]
    # from P4 on: MaxPool -> Dropout -> BatchNorm after each double conv (the block's last ReLU follows the pool,
    # which computes the same function: see the next test)
    assert kinds[:7] == ["Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Dropout", "BatchNorm2d"]
    assert [type(m).__name__ for m in model.neck] == ["Linear", "ReLU", "Dropout", "BatchNorm1d"]


def test_glorot_uniform_init_and_zero_bias():
    model = create_model("proyecto1")
    conv = model.features[0]
    fan_in, fan_out = 3 * 9, 32 * 9
    limit = math.sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= limit
    assert conv.weight.abs().max() > 0.9 * limit
    assert (conv.bias == 0).all()


def test_flatten_is_channels_last_order():
    model = create_model("proyecto1")
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    flat = model.flatten(x)
    # Keras flattens (H, W, C): the first C values are the channels of pixel (0, 0)
    assert flat[0, :3].tolist() == x[0, :, 0, 0].tolist()
    assert flat.shape == (2, 12)


def test_pooling_before_the_last_relu_is_the_seeds_function_exactly():
    torch.manual_seed(0)
    model = create_model("proyecto2").eval()
    seed_order = []
    for layer in model.features:  # rebuild the seed's Conv -> ReLU -> MaxPool order
        if isinstance(layer, torch.nn.ReLU) and isinstance(seed_order[-1], torch.nn.MaxPool2d):
            seed_order.insert(len(seed_order) - 1, layer)
        else:
            seed_order.append(layer)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    ours = model.features(x)
    theirs = torch.nn.Sequential(*seed_order)(x)
    assert torch.equal(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (grad_theirs,) = torch.autograd.grad(theirs.square().sum(), x)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-6)
