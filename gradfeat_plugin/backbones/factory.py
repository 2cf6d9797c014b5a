"""``create_backbone``: a model spec and a weights choice in, a ready backbone out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from timm.data import resolve_model_data_config
from torch import nn

from ..errors import GradfeatError
from ..linearize import default_split
from ..linearize.backbone import _input_size
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
        input_size: ``(C, H, W)`` the model expects.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        partial: The checkpoint left some model tensors as initialised (allowed
            with ``allow_partial_weights``).
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


def create_backbone(
    spec: str, weights: str = "pretrained", allow_partial_weights: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone from a model spec.

    Args:
        spec: ``timm:NAME``, ``torchvision:NAME``, ``zoo:NAME``, another
            ``SOURCE:NAME``, or the name of a registered / entry-point backbone.
        weights: ``"pretrained"`` (the library's default weights), ``"random"``, or a
            checkpoint path or URL loaded with :func:`load_checkpoint`.
        allow_partial_weights: Accept a checkpoint that leaves model tensors
            unloaded (otherwise an error); the backbone is then marked ``partial``.
        **kwargs: Passed to the model constructor (e.g. ``in_chans`` for timm).

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
    model = _build(spec, weights == "pretrained", **kwargs)
    partial = False
    if weights not in WEIGHTS_CHOICES:
        partial = load_checkpoint(model, weights, allow_partial_weights).partial
    model.eval()
    data_config = resolve_model_data_config(model)
    input_size = _input_size(model, {"input_size": tuple(data_config["input_size"])})
    # The real pooled width: timm's num_features is the width before a
    # pre-logits layer on some families (head_hidden_size).
    num_features = feature_dim(model, input_size, spec)
    return Backbone(
        model=model,
        spec=spec,
        weights=weights,
        num_features=int(num_features),
        split=default_split(model),
        input_size=input_size,
        mean=tuple(data_config["mean"]),
        std=tuple(data_config["std"]),
        partial=partial,
    )
