"""Resolve which modules of a backbone form θ2, the linearised top block(s)."""

from __future__ import annotations

import difflib
from typing import Sequence

from torch import nn

SplitSpec = str | Sequence[str] | None


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _last_child_with_params(module: nn.Module) -> str | None:
    for name, child in reversed(list(module.named_children())):
        if _has_params(child):
            return name
    return None


def default_split(model: nn.Module) -> list[str]:
    """The default θ2 of a backbone: its topmost residual/stage/transformer block.

    An attribute ``gradfeat_split`` on the model wins. Otherwise, by family: ResNets
    (timm or torchvision) take the last block of ``layer4``, ConvNeXt the last block
    of the last stage, ViTs the last transformer block, and anything else the last
    child module that has parameters (descending into a ``Sequential`` so that the
    top layer, not the whole trunk, is chosen).

    Args:
        model: The backbone whose forward returns pooled features.

    Returns:
        A list with one module name of ``model``.

    >>> import torchvision
    >>> default_split(torchvision.models.resnet18())
    ['layer4.1']
    """
    explicit = getattr(model, "gradfeat_split", None)
    if explicit:
        return [explicit] if isinstance(explicit, str) else list(explicit)
    modules = dict(model.named_modules())
    layer4 = modules.get("layer4")
    if isinstance(layer4, nn.Sequential) and len(layer4) > 0:
        return [f"layer4.{len(layer4) - 1}"]
    stages = modules.get("stages")
    if isinstance(stages, nn.Sequential) and len(stages) > 0:
        last_stage = stages[-1]
        blocks = getattr(last_stage, "blocks", None)
        if isinstance(blocks, nn.Sequential) and len(blocks) > 0:
            return [f"stages.{len(stages) - 1}.blocks.{len(blocks) - 1}"]
        return [f"stages.{len(stages) - 1}"]
    blocks = modules.get("blocks")
    if isinstance(blocks, nn.Sequential) and len(blocks) > 0:
        return [f"blocks.{len(blocks) - 1}"]
    prefix = ""
    current = model
    while True:
        child = _last_child_with_params(current)
        if child is None:
            raise ValueError(f"model {type(model).__name__} has no parameters to linearise")
        name = prefix + child
        sub = getattr(current, child)
        if isinstance(sub, nn.Sequential) and _last_child_with_params(sub) is not None:
            prefix, current = name + ".", sub
            continue
        return [name]


def resolve_split(model: nn.Module, split: SplitSpec = None) -> list[str]:
    """Validate a user's θ2 choice, or fall back to :func:`default_split`.

    Args:
        model: The backbone.
        split: A module name, a list of names, or ``None`` for the default.

    Returns:
        The list of θ2 module names, each with at least one parameter.

    Raises:
        ValueError: A name is not a module of ``model`` (the message lists the
            nearest valid names), owns no parameters, or nests inside another.
    """
    if split is None:
        return default_split(model)
    names = [split] if isinstance(split, str) else list(split)
    if not names:
        raise ValueError("split must name at least one module")
    modules = dict(model.named_modules())
    valid = [n for n, m in modules.items() if n and _has_params(m)]
    for name in names:
        if name not in modules:
            near = difflib.get_close_matches(name, valid, n=5, cutoff=0.4) or valid[-5:]
            raise ValueError(
                f"unknown split {name!r}: not a module of {type(model).__name__}; "
                f"nearest valid names: {', '.join(near)}"
            )
        if not _has_params(modules[name]):
            raise ValueError(f"split {name!r} has no parameters to linearise")
    for a in names:
        for b in names:
            if a != b and (b == "" or a.startswith(b + ".")):
                raise ValueError(f"split names overlap: {a!r} lies inside {b!r}")
    return names
