"""``create_backbone``: a model spec and a weights choice in, a ready backbone out."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from timm.data import resolve_model_data_config
from torch import nn

from ..data.transforms import normalization
from ..errors import GradfeatError
from ..linearize import default_split
from ..linearize.backbone import _input_size as model_input_size
from . import _offline
from ._registry import get_factory, get_source
from .checkpoint import load_checkpoint
from .sources import feature_dim

WEIGHTS_CHOICES = ("pretrained", "random")


@dataclass
class Backbone:
    """A frozen-ready backbone and what a protocol needs to feed and split it.

    Args:
        model: Module in eval mode whose forward returns pooled ``(B, d)`` features.
        spec: The model spec it was built from, e.g. ``"timm:resnet18"``.
        weights: ``"pretrained"``, ``"random"``, or the checkpoint path/URL.
        num_features: ``d``.
        split: Default θ2 module names (``model.gradfeat_split`` if set).
        input_size: ``(C, H, W)`` the model is fed: the ``input_size`` asked for,
            else the one its checkpoint's metadata records, else the family's.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        partial: The checkpoint left some model tensors as initialised (allowed
            with ``allow_partial_weights``).
        weights_key: The key prefix the checkpoint's tensors were loaded from,
            without its final dot (``backbone``, ``model.student``; ``""`` for
            none or without a checkpoint), whether given or found.
    """

    model: nn.Module
    spec: str
    weights: str
    num_features: int
    split: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    partial: bool = False
    weights_key: str = ""


def _call_plugin_factory(
    name: str, factory: Callable[..., nn.Module], pretrained: bool, **kwargs: Any
) -> nn.Module:
    try:
        model = factory(pretrained=pretrained, **kwargs)
    except (ValueError, OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise _offline.offline_error(name, str(e)) from e
    factory_split = getattr(factory, "gradfeat_split", None)
    if factory_split and not getattr(model, "gradfeat_split", None):
        model.gradfeat_split = factory_split
    return model


def _build(spec: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    if ":" in spec:
        prefix, name = spec.split(":", 1)
        return get_source(prefix).create_model(name, pretrained, **kwargs)
    return _call_plugin_factory(spec, get_factory(spec), pretrained, **kwargs)


def _build_at_image_size(spec: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """:func:`_build`; a family whose constructor takes no ``img_size`` (a fully
    convolutional one, such as timm's TResNet) is built without it and only fed
    at that size."""
    try:
        return _build(spec, pretrained, **kwargs)
    except TypeError as e:
        if "img_size" not in kwargs or "'img_size'" not in str(e):
            raise
        rest = {k: v for k, v in kwargs.items() if k != "img_size"}
        return _build(spec, pretrained, **rest)


def _kwargs_error(spec: str, kwargs: dict[str, Any], error: BaseException) -> str:
    """Why ``spec``'s constructor refused ``kwargs`` (a keyword it does not take,
    or a value it cannot use), in one line."""
    given = " ".join(f"{k}={v}" for k, v in kwargs.items())
    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"backbone {spec} cannot be built with --model-kwargs {given} ({why}); "
        "pass only keywords its constructor takes (MODEL.KWARGS)"
    )


def _image_size(value: Any) -> tuple[int, int] | None:
    """An ``img_size`` constructor argument as ``(H, W)``, or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None


#: The largest image side ``--input-size`` takes: one float image of 4096² pixels
#: and 3 channels is 200 MB before the model's activations.
MAX_INPUT_SIDE = 4096


def parse_input_size(value: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``32``, ``"32"``, ``"3,32,32"`` or ``(3, 32, 32)`` as a tuple; empty gives ``None``.

    Raises:
        GradfeatError: Not one or three positive integers, or a side above
            :data:`MAX_INPUT_SIDE`.

    >>> parse_input_size("32"), parse_input_size("1,28,28"), parse_input_size("")
    ((32,), (1, 28, 28), None)
    """
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.replace("x", ",").split(",")]
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [value]
    size = tuple(_positive_int(p) for p in parts)
    if len(size) not in (1, 3) or 0 in size:
        raise GradfeatError(
            f"input size must be N or C,H,W with positive integers, got {value!r}"
        )
    if max(size[-2:]) > MAX_INPUT_SIDE:
        raise GradfeatError(
            f"input size {value!r} has a side above {MAX_INPUT_SIDE} pixels; "
            "pass a smaller --input-size"
        )
    return size


def _positive_int(part: Any) -> int:
    """``part`` as a positive integer, or 0 when it is not one (``32.5``, ``-3``)."""
    if isinstance(part, int) and not isinstance(part, bool):
        return max(part, 0)
    if isinstance(part, str) and part.isdigit():
        return int(part)
    return 0


def recorded_input_size(weights: str) -> tuple[int, int, int] | None:
    """The input size a checkpoint's metadata records (``benchmarks/pretrain.py``
    writes ``NAME.json`` next to ``NAME.pth``), or ``None``."""
    path = os.path.splitext(weights)[0] + ".json"
    try:
        with open(path) as f:
            size = json.load(f)["pretrained_cfg"]["input_size"]
        return (int(size[0]), int(size[1]), int(size[2]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _input_size(
    asked: tuple[int, ...] | None, weights: str, default: tuple[int, ...]
) -> tuple[int, int, int]:
    if asked is not None:
        return (default[0], asked[0], asked[0]) if len(asked) == 1 else asked  # type: ignore[return-value]
    if weights not in WEIGHTS_CHOICES:
        recorded = recorded_input_size(weights)
        if recorded is not None:
            return recorded
    return tuple(default)  # type: ignore[return-value]


def create_backbone(
    spec: str,
    weights: str = "pretrained",
    weights_key: str = "",
    input_size: str | int | Sequence[int] | None = None,
    allow_partial_weights: bool = False,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone from a model spec.

    Args:
        spec: ``timm:NAME``, ``torchvision:NAME``, ``zoo:NAME``, another
            ``SOURCE:NAME``, or the name of a registered / entry-point backbone.
        weights: ``"pretrained"`` (the library's default weights), ``"random"``, or a
            checkpoint path or URL loaded with :func:`load_checkpoint`.
        weights_key: The backbone's key prefix in the checkpoint, e.g.
            ``teacher_backbone`` (``""``: the prefix that fits).
        input_size: ``N`` or ``(C, H, W)`` to feed the model instead of its
            default (e.g. 32 for a model pretrained on 32-pixel images). Without
            it, a model built with an ``img_size`` keyword is fed at that size.
        allow_partial_weights: Accept a checkpoint that leaves model tensors
            unloaded (otherwise an error); the backbone is then marked ``partial``.
        mean: Per-channel normalisation mean instead of the model's own: one
            value per input channel, or ``imagenet``, ``inception`` or ``clip``.
        std: Likewise, the standard deviation (positive).
        **kwargs: Passed to the model constructor (e.g. ``in_chans`` or
            ``img_size`` for timm; a family that takes no ``img_size`` is only
            fed at that size).

    Returns:
        A :class:`Backbone` with the model in eval mode.

    Raises:
        GradfeatError: Unknown spec, weights unavailable (offline), or a bad checkpoint.

    >>> bb = create_backbone("timm:resnet18", weights="random")
    >>> bb.num_features, bb.split, bb.input_size
    (512, ['layer4.1'], (3, 224, 224))
    """
    if not weights:
        raise GradfeatError("--weights must be 'pretrained', 'random' or a PATH/URL")
    asked = parse_input_size(input_size)
    try:
        model = _build_at_image_size(spec, weights == "pretrained", **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        if not kwargs:
            raise
        raise GradfeatError(_kwargs_error(spec, kwargs, e)) from None
    partial, loaded_from = False, ""
    if weights not in WEIGHTS_CHOICES:
        report = load_checkpoint(
            model, weights, allow_partial_weights, weights_key=weights_key
        )
        partial, loaded_from = report.partial, report.prefix.rstrip(".")
    model.eval()
    data_config = resolve_model_data_config(model)
    default_size = model_input_size(model, {"input_size": tuple(data_config["input_size"])})
    built_for = _image_size(kwargs.get("img_size"))
    if built_for is not None:
        # The size the model was built for (timm leaves it out of pretrained_cfg
        # on most families) comes before what a checkpoint's metadata records.
        asked = asked or (default_size[0], *built_for)
    input_size = _input_size(asked, weights, default_size)
    # The model carries the size it is fed, so every linearisation of it (and its
    # self-check, and the Python values its cut passes) works at that size.
    model.pretrained_cfg = {**dict(getattr(model, "pretrained_cfg", None) or {}),
                            "input_size": tuple(input_size)}
    # The real pooled width: timm's num_features is the width before a
    # pre-logits layer on some families (head_hidden_size).
    num_features = feature_dim(model, input_size, spec)
    channels = input_size[0]
    mean = normalization(mean, "mean", channels) or tuple(data_config["mean"])
    std = normalization(std, "std", channels) or tuple(data_config["std"])
    return Backbone(
        model=model,
        spec=spec,
        weights=weights,
        num_features=int(num_features),
        split=default_split(model),
        input_size=input_size,
        mean=mean,
        std=std,
        partial=partial,
        weights_key=loaded_from,
    )
