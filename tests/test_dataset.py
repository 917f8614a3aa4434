import pytest
import torch

from cifarlab.data.dataset import balanced_first, stratified_split, with_validation
from tests.factories import make_dataset, make_split


def test_stratified_split_sizes_and_proportions():
    labels = torch.arange(1000) % 10
    train, val = stratified_split(labels, 200, seed=0)
    assert len(val) == 200 and len(train) == 800
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.bincount(labels[val], minlength=10).tolist() == [20] * 10


def test_stratified_split_exact_total_with_uneven_classes():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    train, val = stratified_split(labels, 4, seed=1)
    assert len(val) == 4 and len(train) == 11
    counts = torch.bincount(labels[val], minlength=3).tolist()
    assert all(c >= 1 for c in counts)


def test_split_is_fixed_by_seed():
    labels = torch.arange(500) % 5
    assert torch.equal(stratified_split(labels, 100, 3)[1], stratified_split(labels, 100, 3)[1])
    assert not torch.equal(stratified_split(labels, 100, 3)[1], stratified_split(labels, 100, 4)[1])


def test_val_size_zero_and_too_large():
    labels = torch.arange(10) % 2
    train, val = stratified_split(labels, 0, 0)
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(ValueError, match="--val-size 10 leaves no training images"):
        stratified_split(labels, 10, 0)


def test_with_validation_keeps_an_existing_val_split():
    dataset = make_dataset(train=40, test=8)
    dataset.val = make_split(12)
    out = with_validation(dataset, 10, seed=0)
    assert out.val is dataset.val and len(out.train) == 40
    out = with_validation(make_dataset(train=40, test=8), 8, seed=0)
    assert len(out.train) == 32 and len(out.val) == 8


def test_select_classes_relabels_and_limits_training_images():
    from cifarlab.data.dataset import select_classes

    dataset = make_dataset(train=80, test=20, num_classes=4)
    out = select_classes(dataset, ("class3", "class1"), per_class_limit=5, seed=0)
    assert out.class_names == ["class3", "class1"]
    assert torch.bincount(out.train.labels).tolist() == [5, 5]
    assert torch.bincount(out.test.labels).tolist() == [5, 5]  # the test split keeps all its images
    # relabelled images are the old class-3 images
    old = dataset.train.images[dataset.train.labels == 3]
    assert any(torch.equal(out.train.images[0], image) for image in old)
    with pytest.raises(ValueError, match="--classes: unknown class dragon"):
        select_classes(dataset, ("dragon",), None, 0)


def test_balanced_first_takes_every_class_in_turn_from_a_class_sorted_split():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 3)  # sorted by class, as a folder's test split
    index = balanced_first(labels, 7)
    assert index.tolist() == [0, 1, 2, 5, 6, 10, 11]
    assert torch.bincount(labels[index]).tolist() == [3, 2, 2]
    assert balanced_first(labels, 13).tolist() == list(range(13))  # all of them, in order
