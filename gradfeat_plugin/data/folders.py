"""Datasets read from local folders: class-per-folder images and PASCAL VOC 2007."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..errors import GradfeatError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def read_image(path: str) -> Image.Image:
    """An RGB image; a file PIL cannot decode is a :class:`GradfeatError` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise GradfeatError(f"imagefolder: cannot read image {path}: {err}") from None


def _check_image(path: str) -> None:
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise GradfeatError(f"imagefolder: cannot read image {path}: {err}") from None


class ClassFolders(datasets.ImageFolder):
    """torchvision's ``ImageFolder``, walked without loops or duplicates.

    Symbolic links are followed, but a folder is entered once: never the split's
    own folder, another class's folder or a folder already walked (so a link such
    as ``train/c0/loop -> ..`` adds nothing). One file reached twice in a class
    counts once; one file in two classes is an error. Every image's header is
    checked when the folder is read, and an image that fails to decode later is
    reported by path.

    Args:
        root: The split's folder (``PATH/train``), one subfolder per class.
        transform: Transform of the PIL images.

    Raises:
        GradfeatError: An unreadable image, or an image in two classes.
        FileNotFoundError: A class without images (as in torchvision).
    """

    def __init__(self, root: str, transform: Callable) -> None:
        super().__init__(root, transform=transform, loader=read_image)
        for path, _ in self.samples:
            _check_image(path)

    @staticmethod
    def make_dataset(  # type: ignore[override]
        directory: str,
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        directory = os.path.expanduser(directory)
        class_dirs = {c: os.path.join(directory, c) for c in class_to_idx}
        entered = {os.path.realpath(directory)}
        entered |= {os.path.realpath(d) for d in class_dirs.values()}
        owner: dict[str, tuple[str, str]] = {}
        instances = []
        for name, index in sorted(class_to_idx.items(), key=lambda item: item[1]):
            walked = []
            for folder, subfolders, files in os.walk(
                class_dirs[name], followlinks=True
            ):
                kept = []
                for sub in sorted(subfolders):
                    real = os.path.realpath(os.path.join(folder, sub))
                    if real not in entered:
                        entered.add(real)
                        kept.append(sub)
                subfolders[:] = kept
                walked.append((folder, files))
            found = 0
            for folder, files in sorted(walked):
                for file_name in sorted(files):
                    path = os.path.join(folder, file_name)
                    if is_valid_file is not None:
                        valid = is_valid_file(path)
                    else:
                        valid = has_file_allowed_extension(
                            path, extensions or IMG_EXTENSIONS
                        )
                    if not valid:
                        continue
                    real = os.path.realpath(path)
                    if real in owner:
                        first_class, first_path = owner[real]
                        if first_class != name:
                            raise GradfeatError(
                                f"imagefolder: {path} (class {name}) is the same file "
                                f"as {first_path} (class {first_class}); give each "
                                "image one class"
                            )
                        continue
                    owner[real] = (name, path)
                    instances.append((path, index))
                    found += 1
            if not found and not allow_empty:
                raise FileNotFoundError(f"Found no valid file for the class {name}.")
        return instances


def image_folder_splits(
    root: str, train_transform: Callable, test_transform: Callable
) -> tuple[datasets.ImageFolder, datasets.ImageFolder]:
    """``root/train`` and ``root/val``, each with one subfolder per class
    (walked by :class:`ClassFolders`: no loops, no duplicates, images checked).

    Args:
        root: The folder holding ``train/`` and ``val/``.
        train_transform: Transform of training images.
        test_transform: Transform of validation images.

    Raises:
        GradfeatError: If a folder is missing or empty, an image is unreadable or
            in two classes, or the class folders of ``train/`` and ``val/`` differ.
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
            splits.append(ClassFolders(path, transform=transform))
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
