"""The embedded real digit datasets: sizes, splits, label fractions, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradfeat_plugin.data import dataset_targets, get_dataset, list_datasets
from gradfeat_plugin.data.embedded import split_indices
from gradfeat_plugin.errors import GradfeatError


def _stack(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_list_datasets_names_every_source():
    assert list_datasets() == [
        "cifar10", "cifar100", "digits", "mnist5k", "stl10", "svhn", "voc2007",
        "imagefolder:PATH",
    ]  # fmt: skip


def test_mnist5k_is_a_stratified_4000_1000_split_of_real_digits():
    splits = get_dataset("mnist5k")
    assert (len(splits.train), len(splits.test)) == (4000, 1000)
    assert (splits.num_classes, splits.task) == (10, "multiclass")
    assert np.bincount(dataset_targets(splits.train)).tolist() == [400] * 10
    assert np.bincount(dataset_targets(splits.test)).tolist() == [100] * 10
    image, target = splits.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(target, int)
    # Normalised with mean = std = 0.5: background is -1, strokes reach +1.
    assert image.min().item() == -1.0 and image.max().item() > 0.9
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_digits_follows_input_size_mean_and_std():
    splits = get_dataset("digits", input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    images = _stack(splits.test)
    assert images.shape == (360, 1, 16, 16)
    assert images.min().item() == 0.0 and 0.9 < images.max().item() <= 1.0


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_train_and_test_are_disjoint_and_cover_the_data(name):
    train, test = split_indices(name)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(
        np.sort(np.concatenate([train, test])), np.arange(train.size + test.size)
    )
    splits = get_dataset(name)
    train_images = {bytes(x.numpy()) for x in _stack(splits.train)}
    assert not any(bytes(x.numpy()) in train_images for x in _stack(splits.test))


def test_same_seed_gives_the_same_splits_and_label_subsets():
    a = get_dataset("mnist5k", label_fraction=0.1, seed=3)
    b = get_dataset("mnist5k", label_fraction=0.1, seed=3)
    c = get_dataset("mnist5k", label_fraction=0.1, seed=4)
    assert a.train.indices == b.train.indices
    assert a.train.indices != c.train.indices
    assert torch.equal(_stack(a.train), _stack(b.train))
    assert torch.equal(_stack(a.test), _stack(c.test))


@pytest.mark.parametrize("fraction, per_class", [(0.01, 4), (0.1, 40), (0.5, 200)])
def test_label_fraction_is_stratified(fraction, per_class):
    splits = get_dataset("mnist5k", label_fraction=fraction, seed=0)
    assert np.bincount(dataset_targets(splits.train)).tolist() == [per_class] * 10
    assert len(splits.test) == 1000


def test_augmentation_changes_train_images_only():
    torch.manual_seed(0)
    plain = get_dataset("digits")
    augmented = get_dataset("digits", augment=True)
    views = torch.stack([augmented.train[0][0] for _ in range(8)])
    assert views.shape == (8, 3, 32, 32)
    assert not all(torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(plain.test[0][0], augmented.test[0][0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"label_fraction": 1.5}, "label_fraction"),
        (
            {"input_size": (2, 32, 32), "mean": (0.5,) * 2, "std": (0.5,) * 2},
            "input_size",
        ),
        ({"mean": (0.5,)}, "mean and std"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs, message):
    with pytest.raises(GradfeatError, match=message):
        get_dataset("digits", **kwargs)
