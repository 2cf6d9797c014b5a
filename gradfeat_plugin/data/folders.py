"""Datasets read from local folders: class-per-folder images and PASCAL VOC 2007."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from ..errors import GradfeatError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def image_folder_splits(
    root: str, train_transform: Callable, test_transform: Callable
) -> tuple[datasets.ImageFolder, datasets.ImageFolder]:
    """``root/train`` and ``root/val``, each with one subfolder per class.

    Args:
        root: The folder holding ``train/`` and ``val/``.
        train_transform: Transform of training images.
        test_transform: Transform of validation images.

    Raises:
        GradfeatError: If a folder is missing or empty, or the class folders of
            ``train/`` and ``val/`` differ.
    """
    splits = []
    for part, transform in (("train", train_transform), ("val", test_transform)):
        path = os.path.join(root, part)
        if not os.path.isdir(path):
            raise GradfeatError(
                f"imagefolder: {path} is not a folder; lay out PATH/train/CLASS/*.jpg "
                "and PATH/val/CLASS/*.jpg"
            )
        try:
            splits.append(datasets.ImageFolder(path, transform=transform))
        except FileNotFoundError as err:
            raise GradfeatError(f"imagefolder: no images in {path}: {err}") from err
    train, val = splits
    if train.classes != val.classes:
        raise GradfeatError(
            f"imagefolder: class folders differ between {root}/train {train.classes} "
            f"and {root}/val {val.classes}; give both the same class subfolders"
        )
    return train, val


def voc_multi_hot(annotation_path: str) -> torch.Tensor:
    """The 20-class multi-hot label of one VOC annotation file.

    Every annotated object counts, including those marked ``difficult``.

    Args:
        annotation_path: Path of an ``Annotations/*.xml`` file.
    """
    target = torch.zeros(len(VOC_CLASSES))
    for name in ET.parse(annotation_path).getroot().iter("name"):
        if name.text and name.text.strip() in VOC_CLASSES:
            target[VOC_CLASSES.index(name.text.strip())] = 1.0
    return target


class VOC2007MultiLabel(Dataset):
    """PASCAL VOC 2007 image classification: images with 20-class multi-hot targets.

    Reads a local ``VOCdevkit/VOC2007`` laid out as torchvision's ``VOCDetection``
    expects (``JPEGImages``, ``Annotations``, ``ImageSets/Main/{trainval,test}.txt``);
    nothing is downloaded.

    Args:
        root: The folder that contains ``VOCdevkit``.
        image_set: ``trainval`` or ``test``.
        transform: Transform of the PIL images.

    Raises:
        GradfeatError: If the files are not there.
    """

    def __init__(self, root: str, image_set: str, transform: Callable) -> None:
        try:
            voc = datasets.VOCDetection(root, year="2007", image_set=image_set)
        except (RuntimeError, FileNotFoundError) as err:
            raise GradfeatError(
                f"voc2007 {image_set} not found under {os.path.abspath(root)}: "
                "extract VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar there "
                "(giving VOCdevkit/VOC2007), or use an embedded dataset "
                "(mnist5k, digits)"
            ) from err
        self.images = voc.images
        self.targets = torch.stack([voc_multi_hot(path) for path in voc.annotations])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.images[index]) as image:
            return self.transform(image.convert("RGB")), self.targets[index]
