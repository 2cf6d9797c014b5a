"""Transforms that follow a backbone's ``pretrained_cfg``: input size, mean and std."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from torchvision.transforms import v2

from ..errors import GradfeatError

#: Named normalisations (``--mean NAME``/``--std NAME``): timm's constants.
NORMALIZATIONS: dict[str, dict[str, tuple[float, ...]]] = {
    "imagenet": {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD},
    "inception": {"mean": IMAGENET_INCEPTION_MEAN, "std": IMAGENET_INCEPTION_STD},
    "clip": {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD},
}

# Augmentation recipes (off by default for the linear-model protocols, as in the
# paper). Digits get small translations only: flips and big crops change the class.
DIGIT_SHIFT_FRACTION = 0.125
NATURAL_MIN_CROP_SCALE = 0.25


def normalization(
    value: str | Sequence[float] | None, which: str, channels: int | None = None
) -> tuple[float, ...] | None:
    """A per-channel mean or std given as numbers or as a name of
    :data:`NORMALIZATIONS` (``imagenet``, ``inception``, ``clip``).

    Args:
        value: ``None`` (the model's own), a name, or one value per channel.
        which: ``"mean"`` or ``"std"``.
        channels: The images' channel count, when known: the values must match it.

    Raises:
        GradfeatError: An unknown name, not 1 or 3 finite numbers (or not
            ``channels``), or a std that is not positive.

    >>> normalization("imagenet", "std")
    (0.229, 0.224, 0.225)
    >>> normalization([0.5], "mean", channels=1)
    (0.5,)
    """
    if value is None:
        return None
    flag = f"--{which} ({'MODEL.MEAN' if which == 'mean' else 'MODEL.STD'})"
    if isinstance(value, str):
        if value not in NORMALIZATIONS:
            raise GradfeatError(
                f"{flag} must be numbers or one of {', '.join(NORMALIZATIONS)}, "
                f"got {value!r}"
            )
        values = tuple(float(v) for v in NORMALIZATIONS[value][which])
    else:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(type(v) in (int, float) for v in items):
            raise GradfeatError(f"{flag} must be numbers, got {value!r}")
        values = tuple(float(v) for v in items)
    lengths = (channels,) if channels else (1, 3)
    if len(values) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise GradfeatError(
            f"{flag} needs {want} value(s), one per image channel, got {len(values)}"
        )
    if not all(math.isfinite(v) for v in values):
        raise GradfeatError(f"{flag} must be finite, got {values}")
    if which == "std" and min(values) <= 0:
        raise GradfeatError(f"{flag} must be positive, got {values}")
    return values


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
