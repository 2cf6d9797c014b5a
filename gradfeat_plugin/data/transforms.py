"""Transforms that follow a backbone's ``pretrained_cfg``: input size, mean and std."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision.transforms import v2

# Augmentation recipes (off by default for the linear-model protocols, as in the
# paper). Digits get small translations only: flips and big crops change the class.
DIGIT_SHIFT_FRACTION = 0.125
NATURAL_MIN_CROP_SCALE = 0.25


def image_transform(
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool = False,
) -> Callable:
    """PIL image -> normalised ``C×H×W`` float tensor at the backbone's input size.

    Without augmentation the shorter side is resized to the input size and the
    centre is cropped; with it, a random resized crop and a horizontal flip.

    Args:
        input_size: ``(C, H, W)``; ``C`` is 1 (grayscale) or 3 (RGB).
        mean: Per-channel mean subtracted after scaling to ``[0, 1]``.
        std: Per-channel standard deviation divided by.
        augment: Whether to add random crops and flips.
    """
    channels, height, width = input_size
    color = [v2.Grayscale(1)] if channels == 1 else [v2.RGB()]
    if augment:
        geometry = [
            v2.RandomResizedCrop((height, width), scale=(NATURAL_MIN_CROP_SCALE, 1.0)),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize(min(height, width)), v2.CenterCrop((height, width))]
    return v2.Compose(
        [
            v2.ToImage(),
            *color,
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def digit_augmentation(height: int, width: int) -> Callable:
    """Random small shifts of a ``1×H×W`` digit tensor in ``[0, 1]``.

    Args:
        height: Image height.
        width: Image width.
    """
    padding = max(1, round(DIGIT_SHIFT_FRACTION * min(height, width)))
    return v2.RandomCrop((height, width), padding=padding)
