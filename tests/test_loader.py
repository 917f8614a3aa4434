import torch

from cifarlab.data.augment import AugmentConfig
from cifarlab.data.loader import BatchLoader, Normalization
from tests.factories import make_split


def test_one_pass_covers_every_image_once_with_a_partial_last_batch():
    split = make_split(50)
    loader = BatchLoader(split, 16, Normalization(), shuffle=True, seed=0)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    seen = torch.cat([x for x, _ in batches])
    # every image appears exactly once: compare sorted per-image sums
    expected = split.images.float().div(255).sum(dim=(1, 2, 3)).sort().values
    assert torch.allclose(seen.sum(dim=(1, 2, 3)).sort().values, expected, atol=1e-3)


def test_shuffle_differs_between_epochs_and_is_seeded():
    split = make_split(64)
    split.labels = torch.arange(64)  # labels as identities, to read the order back
    loader = BatchLoader(split, 64, Normalization(), shuffle=True, seed=1)
    first, second = next(iter(loader))[1], next(iter(loader))[1]
    assert not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(64))
    again = BatchLoader(split, 64, Normalization(), shuffle=True, seed=1)
    assert torch.equal(next(iter(again))[1], first)


def test_steps_per_epoch_streams_across_passes_like_keras():
    split = make_split(40)  # 40 images, batch 16: passes of 16, 16, 8
    loader = BatchLoader(split, 16, Normalization(), shuffle=True, steps_per_epoch=4, seed=0)
    assert len(loader) == 4
    first = [len(y) for _, y in loader]
    second = [len(y) for _, y in loader]
    assert first == [16, 16, 8, 16]  # the fourth batch starts the second pass
    assert second == [16, 8, 16, 16]


def test_normalization_and_channels_last():
    split = make_split(8)
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x, _ = next(iter(BatchLoader(split, 8, norm, channels_last=True)))
    expected = (split.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_normalization_fit_matches_statistics():
    split = make_split(32)
    norm = Normalization.fit(split.images)
    x = norm(split.images.float())
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_augmentation_changes_training_batches_only_when_asked():
    split = make_split(16)
    plain = next(iter(BatchLoader(split, 16, Normalization(), seed=0)))[0]
    augmented = next(iter(BatchLoader(split, 16, Normalization(), augment=AugmentConfig(crop_padding=4), seed=0)))[0]
    assert plain.shape == augmented.shape
    assert not torch.equal(plain, augmented)
