import pytest
import torch

import cifarlab
from cifarlab.evaluation.tta import TTA
from cifarlab.models import create_model
from tests.factories import make_dataset, make_split


def test_whitening_filters_decorrelate_patches():
    model = create_model("airnet88")
    x = make_split(200).images.float() / 255
    model.init_from_data(x)
    out = torch.nn.functional.conv2d(x, model.whiten.weight[:12])  # (N, 12, 31, 31)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    flat = flat - flat.mean(dim=0)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(12), atol=0.1)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    assert not model.whiten.weight.requires_grad


def test_tta_levels_average_the_right_views():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(TTA(model, 0)(x), model(x))
    assert torch.allclose(TTA(model, 1)(x), (model(x) + model(x.flip(-1))) / 2, atol=1e-6)
    assert TTA(model, 2)(x).shape == (2, 5)
    with pytest.raises(ValueError, match="tta must be 0, 1 or 2"):
        TTA(model, 3)


@pytest.mark.parametrize("preset", ["fast88", "fast94", "fast96"])
def test_fast_presets_build_train_and_learn(preset, tmp_path):
    dataset = make_dataset(train=128, test=64, size=16)
    result = cifarlab.train(preset, dataset=dataset, epochs=3, batch_size=32, out=str(tmp_path / "run"),
                            quiet=True, precision="fp32")  # fmt: skip
    loss = result.history.history["loss"]
    assert loss[-1] < loss[0]
    assert result.test.accuracy > 0.5  # 4 classes
    assert cifarlab.load(result.run_dir, precision="fp32").evaluate(dataset.test).percent() == result.test.percent()


def test_weight_average_tracks_the_weights_and_is_copied_at_the_end():
    from cifarlab.training.ema import WeightAverage

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    for _ in range(50):
        with torch.no_grad():
            model.weight.fill_(1.0)
        ema.update()
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.copy_to(model)
    assert torch.allclose(model.weight, torch.ones(1, 2), atol=1e-6)  # converged to the steady value, not 5
    with pytest.raises(ValueError, match="train.ema must be in"):
        WeightAverage(model, 1.5)
