"""Dataset registry: embedded real digits, torchvision benchmarks, local folders."""

from .embedded import TensorImageDataset
from .folders import VOC_CLASSES, VOC2007MultiLabel
from .registry import (
    DatasetSplits,
    dataset_targets,
    get_dataset,
    label_fraction_indices,
    list_datasets,
)
from .transforms import image_transform

__all__ = [
    "VOC_CLASSES",
    "DatasetSplits",
    "TensorImageDataset",
    "VOC2007MultiLabel",
    "dataset_targets",
    "get_dataset",
    "image_transform",
    "label_fraction_indices",
    "list_datasets",
]
