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


def test_whitening_is_fitted_on_every_class_of_a_class_sorted_split(monkeypatch):
    """An image folder lists its training images class by class; the whitening must not see only the first class."""
    from cifarlab.data.dataset import balanced_first
    from cifarlab.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "WHITENING_SAMPLE", 40)
    dataset = make_dataset(train=160, test=32)
    dataset.train = dataset.train.subset(torch.argsort(dataset.train.labels, stable=True))  # class0 first, ...
    trainer = trainer_module.Trainer(
        cifarlab.resolve_config("fast88", model="airnet88", val_size=0, quiet=True, precision="fp32"), dataset
    )
    images, labels = trainer.train_split.images, trainer.train_split.labels
    assert labels[:40].unique().tolist() == [0]  # the first 40 rows are one class
    expected, first_rows = create_model("airnet88"), create_model("airnet88")
    expected.init_from_data(trainer.normalization(images[balanced_first(labels, 40)].float()))
    first_rows.init_from_data(trainer.normalization(images[:40].float()))
    assert torch.equal(trainer.model.whiten.weight, expected.whiten.weight)
    assert not torch.allclose(trainer.model.whiten.weight, first_rows.whiten.weight, atol=1e-3)


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
    assert any("progressive resizing is off" in note for note in result.notes)  # 16px images, low_res_size 24
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


def test_orthogonalize_sets_every_singular_value_near_one():
    from cifarlab.training.muon import orthogonalize

    generator = torch.Generator().manual_seed(0)
    for shape in [(16, 72), (72, 16)]:
        matrix = torch.randn(shape, generator=generator) * torch.logspace(-1, 0.5, shape[1])  # unequal scales
        singular = torch.linalg.svdvals(orthogonalize(matrix).float())
        assert singular.min() > 0.5 and singular.max() < 1.3, singular
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)  # the same directions as the exact factor U V^T
        assert torch.nn.functional.cosine_similarity(orthogonalize(matrix).flatten(), (u @ vh).flatten(), dim=0) > 0.9
    with pytest.raises(ValueError, match="2-D"):
        orthogonalize(torch.ones(3))


def test_muon_groups_filters_keeps_their_norm_and_trains_the_rest_with_sgd():
    from cifarlab.config import TrainConfig
    from cifarlab.training.muon import Muon
    from cifarlab.training.schedules import build_optimizer

    model = create_model("airnet88")
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", lr=0.1, muon_lr=0.2, bias_lr_scale=4.0))
    assert isinstance(optimizer, Muon)
    by_role = {(g["orthogonal"], g["lr"]): g["params"] for g in optimizer.param_groups}
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    assert by_role[(True, 0.2)] == filters
    assert by_role[(False, 0.1)] == [model.head.weight]
    assert all(p.ndim == 1 for p in by_role[(False, 0.4)])  # BatchNorm shifts and the whitening bias at lr x4
    assert optimizer.param_groups[0]["lr"] == 0.1  # the recipe's lr is what history.csv logs
    x, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    optimizer.step()
    conv = model.groups[1].conv2.weight
    assert torch.allclose(conv.norm(), torch.tensor(len(conv) ** 0.5), rtol=0.05)  # rescaled, then one step
    frozen = [i for i, p in enumerate(model.parameters()) if not p.requires_grad]
    assert all(torch.equal(before[i], list(model.parameters())[i]) for i in frozen)
    assert not torch.equal(before[-1], model.head.weight)


def test_alternating_flip_shows_each_image_both_ways_in_two_passes():
    from cifarlab.data.augment import AugmentConfig
    from cifarlab.data.loader import BatchLoader, Normalization

    split = make_split(40, size=8)
    augment = AugmentConfig(horizontal_flip=True, alternate_flip=True)
    loader = BatchLoader(split, 16, Normalization(), shuffle=True, augment=augment, seed=3)

    def flipped_per_image() -> torch.Tensor:
        flags = torch.zeros(len(split), dtype=torch.bool)
        originals = Normalization()(split.images.float())
        for inputs, _ in loader:
            for image in inputs:
                same = (originals == image).flatten(1).all(1)
                mirrored = (originals.flip(-1) == image).flatten(1).all(1)
                index = int((same | mirrored).nonzero()[0])
                flags[index] = bool(mirrored[index]) and not bool(same[index])
        return flags

    first, second = flipped_per_image(), flipped_per_image()
    assert torch.equal(first, ~second)  # every image in both orientations across two consecutive passes
    assert 8 < int(first.sum()) < 32  # a random half, not all or none
    assert torch.equal(flipped_per_image(), first)


def test_progressive_resizing_shrinks_the_first_epochs_only(tmp_path):
    from cifarlab.training.trainer import Trainer

    dataset = make_dataset(train=64, test=32, size=16)
    config = cifarlab.resolve_config("fast88", epochs=3, val_size=0, batch_size=32, quiet=True, precision="fp32",
                                     **{"train.low_res_size": 12, "train.low_res_epochs": 2})  # fmt: skip
    trainer = Trainer(config, dataset)
    sizes = []
    original = trainer.forward_model
    trainer.forward_model = lambda x: sizes.append(x.shape[-1]) or original(x)
    trainer.fit()
    assert sizes == [12, 12, 12, 12, 16, 16]  # two steps per epoch
    with pytest.raises(ValueError, match="train.low_res_size: model 'proyecto1' cannot take 8x8 images"):
        Trainer(
            cifarlab.resolve_config("proyecto1", val_size=0, **{"train.low_res_size": 8, "train.low_res_epochs": 1}),
            dataset,
        )
    with pytest.raises(ValueError, match="go together"):
        cifarlab.resolve_config("proyecto1", **{"train.low_res_size": 8})


def test_whitening_bias_learns_for_its_epochs_then_stays(tmp_path):
    from cifarlab.training.trainer import Trainer

    config = cifarlab.resolve_config("fast88", model="airnet88", epochs=3, batch_size=32, quiet=True,
                                     precision="fp32", **{"train.whiten_bias_epochs": 1})  # fmt: skip
    trainer = Trainer(config, make_dataset(train=64, test=32))
    biases = []

    class Watch(cifarlab.Callback):
        def on_epoch_end(self, epoch, logs):
            biases.append(trainer.model.whiten.bias.detach().clone())

    trainer.callbacks.append(Watch())
    trainer.fit()
    assert not torch.equal(biases[0], torch.zeros_like(biases[0]))  # learnt in epoch 1 (it starts at 0)
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])  # then frozen
    assert trainer.model.groups[0].conv1.weight.grad is not None  # the layers after it still learn
    with pytest.raises(ValueError, match="train.whiten_bias_epochs: model 'proyecto1' has no whitening conv"):
        Trainer(cifarlab.resolve_config("proyecto1", val_size=0, **{"train.whiten_bias_epochs": 2}),
                make_dataset(train=64, test=32))  # fmt: skip


@pytest.mark.gpu
def test_fast_training_step_queues_without_host_syncs():
    """On CUDA the fast recipe's whole step (batch, flip, crop, resize, Muon) never waits for the device."""
    from cifarlab.training.trainer import Trainer

    config = cifarlab.resolve_config("fast88", batch_size=32, device="cuda", quiet=True,
                                     **{"train.low_res_size": 24, "train.low_res_epochs": 1})  # fmt: skip
    trainer = Trainer(config, make_dataset(train=96, test=32))
    trainer.train_loader.resize_to = 24
    batches = iter(trainer.train_loader)
    trainer.train_step(*next(batches))  # warm up: kernels, allocator, optimizer state
    torch.cuda.set_sync_debug_mode("error")
    try:
        for inputs, labels in batches:
            loss, _ = trainer.train_step(inputs, labels)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert inputs.shape[-1] == 24 and torch.isfinite(loss)
