"""Standard benchmarks read through torchvision from a local folder; no downloads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset
from torchvision import datasets

from ..errors import GradfeatError

_OFFLINE_HINT = "or use an embedded offline dataset (mnist5k, digits)"


@dataclass(frozen=True)
class TorchvisionSource:
    """One torchvision dataset: how to build a split and which files it needs.

    Args:
        build: ``build(root, train, transform)`` returns the split.
        num_classes: Number of classes.
        files: The files or folder torchvision expects directly under the root.
    """

    build: Callable[[str, bool, Callable], Dataset]
    num_classes: int
    files: str


TORCHVISION_SOURCES: dict[str, TorchvisionSource] = {
    "cifar10": TorchvisionSource(
        lambda root, train, tf: datasets.CIFAR10(root, train=train, transform=tf),
        10,
        "the extracted 'cifar-10-batches-py' folder of cifar-10-python.tar.gz",
    ),
    "cifar100": TorchvisionSource(
        lambda root, train, tf: datasets.CIFAR100(root, train=train, transform=tf),
        100,
        "the extracted 'cifar-100-python' folder of cifar-100-python.tar.gz",
    ),
    "svhn": TorchvisionSource(
        lambda root, train, tf: datasets.SVHN(
            root, split="train" if train else "test", transform=tf
        ),
        10,
        "train_32x32.mat and test_32x32.mat",
    ),
    "stl10": TorchvisionSource(
        lambda root, train, tf: datasets.STL10(
            root, split="train" if train else "test", transform=tf
        ),
        10,
        "the extracted 'stl10_binary' folder of stl10_binary.tar.gz",
    ),
}


def torchvision_splits(
    name: str, data_dir: str, train_transform: Callable, test_transform: Callable
) -> tuple[Dataset, Dataset]:
    """Train and test splits of a torchvision dataset stored under ``data_dir``.

    Args:
        name: A key of ``TORCHVISION_SOURCES``.
        data_dir: The folder holding the dataset's files (torchvision's ``root``).
        train_transform: Transform of training images.
        test_transform: Transform of test images.

    Raises:
        GradfeatError: If ``data_dir`` is empty or the files are not there; the
            message says which files to place where.
    """
    source = TORCHVISION_SOURCES[name]
    if not data_dir:
        raise GradfeatError(
            f"{name} needs a data folder: pass --data-dir DIR (DATA.DATA_DIR) holding "
            f"{source.files}, {_OFFLINE_HINT}"
        )
    try:
        return (
            source.build(data_dir, True, train_transform),
            source.build(data_dir, False, test_transform),
        )
    except RuntimeError as err:
        raise GradfeatError(
            f"{name} not found in {os.path.abspath(data_dir)} (downloads are off): "
            f"place {source.files} there, {_OFFLINE_HINT}"
        ) from err
