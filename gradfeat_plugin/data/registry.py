"""``get_dataset(NAME)``: train/test splits, class count and task of every dataset."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import GradfeatError
from .embedded import EMBEDDED_SOURCES, embedded_splits
from .folders import VOC_CLASSES, VOC2007MultiLabel, image_folder_splits
from .torchvision_sets import TORCHVISION_SOURCES, torchvision_splits
from .transforms import image_transform

IMAGEFOLDER_PREFIX = "imagefolder:"


@dataclass
class DatasetSplits:
    """A dataset's train, validation and test splits.

    Items are ``(image, target)``: ``image`` a normalised ``C×H×W`` float tensor,
    ``target`` an ``int`` for ``multiclass`` and a float multi-hot tensor of
    length ``num_classes`` for ``multilabel``.

    Args:
        name: The name it was loaded by.
        train: Training split (after any label fraction and validation hold-out).
        test: Test split.
        num_classes: Number of classes.
        task: ``"multiclass"`` or ``"multilabel"``.
        val: Validation split every choice is made on; ``None``: there is none
            and choices are made on the test split (the rows say so).
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    task: str
    val: Dataset | None = None


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset` (``imagefolder:PATH`` takes a path).

    >>> list_datasets()[:2]
    ['cifar10', 'cifar100']
    """
    names = [*EMBEDDED_SOURCES, *TORCHVISION_SOURCES, "voc2007"]
    return sorted(names) + [IMAGEFOLDER_PREFIX + "PATH"]


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """The targets of a dataset without reading its images.

    Args:
        dataset: A dataset from :func:`get_dataset` (or a ``Subset`` of one).

    Returns:
        ``N`` class labels, or an ``N×C`` multi-hot array for multi-label data.
    """
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset)[np.asarray(dataset.indices)]
    for attribute in ("targets", "labels"):
        targets = getattr(dataset, attribute, None)
        if targets is not None:
            return np.asarray(targets)
    raise TypeError(f"{type(dataset).__name__} exposes no targets or labels")


def label_fraction_indices(
    targets: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """A seeded subset of rows keeping ``fraction`` of every class.

    Each class keeps ``round(fraction * count)`` of its examples, at least one.
    Multi-label targets are stratified by their first positive class.

    Args:
        targets: ``N`` labels or an ``N×C`` multi-hot array.
        fraction: Fraction in ``(0, 1]``.
        seed: Seed of the choice.

    Returns:
        Sorted row indices.

    >>> label_fraction_indices(np.array([0, 0, 0, 0, 1, 1]), 0.5, seed=0).size
    3
    """
    strata = targets.argmax(axis=1) if targets.ndim == 2 else targets
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(strata):
        rows = np.flatnonzero(strata == label)
        count = max(1, round(fraction * rows.size))
        keep.append(rng.choice(rows, size=count, replace=False))
    return np.sort(np.concatenate(keep))


def get_dataset(
    name: str,
    *,
    input_size: Sequence[int] = (3, 32, 32),
    mean: Sequence[float] = (0.5,) * 3,
    std: Sequence[float] = (0.5,) * 3,
    data_dir: str = "",
    label_fraction: float = 1.0,
    seed: int = 0,
    augment: bool = False,
    val_fraction: float = 0.0,
) -> DatasetSplits:
    """Load a dataset by name, with transforms that follow the backbone's config.

    Args:
        name: One of :func:`list_datasets`; ``imagefolder:PATH`` reads
            ``PATH/train`` and ``PATH/val``.
        input_size: ``(C, H, W)`` of the backbone's input.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        data_dir: Local root of torchvision datasets and of ``VOCdevkit``.
        label_fraction: Fraction of training labels kept (stratified, seeded),
            for low-shot evaluation.
        seed: Seed of the label-fraction subset and of the validation hold-out.
        augment: Random crops (and flips, for natural images) on the training
            split; off by default so frozen features can be cached.
        val_fraction: Fraction of the (label-fraction) training split held out,
            stratified and seeded, as the validation split every choice is made
            on; 0 holds out nothing. The held-out images get the test transform.

    Raises:
        GradfeatError: For an unknown name, missing files or bad arguments.

    >>> splits = get_dataset("digits")
    >>> len(splits.train), len(splits.test), splits.num_classes, splits.task
    (1437, 360, 10, 'multiclass')
    >>> held_out = get_dataset("digits", val_fraction=0.1)
    >>> len(held_out.train), len(held_out.val), len(held_out.test)
    (1295, 142, 360)
    """
    if not 0.0 < label_fraction <= 1.0:
        raise GradfeatError(f"label_fraction must be in (0, 1], got {label_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise GradfeatError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(input_size) != 3 or input_size[0] not in (1, 3):
        raise GradfeatError(
            f"input_size must be (C, H, W) with C 1 or 3, got {input_size}"
        )
    if len(mean) != input_size[0] or len(std) != input_size[0]:
        raise GradfeatError(
            f"mean and std need {input_size[0]} values, got {mean}, {std}; pass "
            f"--mean and --std with {input_size[0]} value(s) (MODEL.MEAN, MODEL.STD)"
        )
    task, num_classes = "multiclass", 10
    if name in EMBEDDED_SOURCES:
        train, test = embedded_splits(name, input_size, mean, std, augment)
    else:
        train_tf = image_transform(input_size, mean, std, augment)
        test_tf = image_transform(input_size, mean, std)
        if name in TORCHVISION_SOURCES:
            train, test = torchvision_splits(name, data_dir, train_tf, test_tf)
            num_classes = TORCHVISION_SOURCES[name].num_classes
        elif name == "voc2007":
            if not data_dir:
                raise GradfeatError(
                    "voc2007 needs a data folder: pass --data-dir DIR (DATA.DATA_DIR) "
                    "holding VOCdevkit/VOC2007"
                )
            train = VOC2007MultiLabel(data_dir, "trainval", train_tf)
            test = VOC2007MultiLabel(data_dir, "test", test_tf)
            task, num_classes = "multilabel", len(VOC_CLASSES)
        elif name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(
            IMAGEFOLDER_PREFIX
        ):
            root = name[len(IMAGEFOLDER_PREFIX) :]
            train, test = image_folder_splits(root, train_tf, test_tf)
            num_classes = len(train.classes)
        else:
            raise GradfeatError(
                f"unknown dataset {name!r}; choose one of {list_datasets()}"
            )
    if label_fraction < 1.0:
        keep = label_fraction_indices(dataset_targets(train), label_fraction, seed)
        train = Subset(train, keep.tolist())
    val = None
    if val_fraction > 0.0:
        train, val = hold_out(train, val_fraction, seed, test)
    return DatasetSplits(name, train, test, num_classes, task, val)


def hold_out(
    train: Dataset, fraction: float, seed: int, like: Dataset
) -> tuple[Dataset, Dataset]:
    """``train`` split into what stays and a stratified, seeded validation part.

    Every class gives ``round(fraction * count)`` of its examples (at least one,
    and at least one stays). The validation part is read with the transform of
    ``like`` (the test split), so that augmentation never reaches it.

    Raises:
        GradfeatError: A class would keep no training example.
    """
    targets = dataset_targets(train)
    held = label_fraction_indices(targets, fraction, seed + 1)
    strata = targets.argmax(axis=1) if targets.ndim == 2 else targets
    remaining = np.setdiff1d(np.arange(len(targets)), held)
    if set(np.unique(strata[remaining])) != set(np.unique(strata)):
        raise GradfeatError(
            f"DATA.VAL_FRACTION {fraction} leaves a class without training examples "
            f"({len(targets)} training images); lower it or set it to 0"
        )
    return Subset(train, remaining.tolist()), Subset(_with_transform_of(train, like), held.tolist())


def _with_transform_of(train: Dataset, like: Dataset) -> Dataset:
    """``train`` read with ``like``'s transform, when the two differ (augmentation)."""
    base, indices = train, None
    if isinstance(train, Subset):
        base, indices = train.dataset, train.indices
    transform = getattr(like, "transform", None)
    if getattr(base, "transform", None) is transform or not hasattr(base, "transform"):
        return train
    copy_ = copy.copy(base)
    copy_.transform = transform
    return copy_ if indices is None else Subset(copy_, indices)
