"""Resolve which modules of a backbone form θ2, the linearised top block(s)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

from torch import nn

SplitSpec = str | Sequence[str] | None

#: Layers whose weights make a module a real block of the trunk.
WEIGHTED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)
#: Containers whose elements are a network's blocks or stages.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
#: Path components that mark the classifier side of a network, never θ2 by default.
HEAD_NAMES = frozenset(
    {"head", "heads", "fc", "classifier", "pre_logits", "head_drop", "global_pool"}
)
#: The smallest share of the parameters a default θ2 holds before it grows a level;
#: a chosen θ2 below it is warned about.
MIN_DEFAULT_SHARE = 0.01
#: Normalisation layers: a θ2 of these alone has no weights to linearise.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _weighted_layers(module: nn.Module) -> int:
    return sum(isinstance(m, WEIGHTED_LAYERS) for m in module.modules())


def _is_real_block(module: nn.Module) -> bool:
    """A block, not a layer: two or more conv/linear layers inside."""
    return _weighted_layers(module) >= 2


def _classifier_side(name: str) -> bool:
    # Auxiliary classifiers (GoogLeNet's aux1/aux2, Inception's AuxLogits) too.
    return any(
        part in HEAD_NAMES or part.lower().startswith("aux") for part in name.split(".")
    )


def _holds_blocks(module: nn.Module) -> bool:
    """A container, or a module with three or more real blocks of one class."""
    if isinstance(module, CONTAINERS):
        return True
    classes: dict[type, int] = {}
    for child in module.children():
        if _is_real_block(child) and not isinstance(child, CONTAINERS):
            classes[type(child)] = classes.get(type(child), 0) + 1
    return any(count >= 3 for count in classes.values())


@dataclass(frozen=True)
class SplitCandidate:
    """A module that can serve as θ2: a block, a stage, or a top-level layer.

    Attributes:
        name: Its module name in the backbone.
        num_params: Its parameter count.
        share: Its share of the backbone's parameters.
        block: True for a block (an element of a container, or one of three or
            more blocks of one class under one parent) holding two or more conv or
            linear layers.
    """

    name: str
    num_params: int
    share: float
    block: bool


def split_candidates(model: nn.Module) -> list[SplitCandidate]:
    """Modules worth linearising, in registration (≈ execution) order.

    Blocks (residual, stage and transformer blocks: elements of a
    ``Sequential``/``ModuleList``/``ModuleDict``, or repeated children of one
    class, holding two or more conv or linear layers), and the top-level children
    and containers that hold such layers; norms, pooling and classifier-side layers
    are left out.

    Args:
        model: The backbone.

    Returns:
        The candidates, each with its parameter count and share.
    """
    total = max(1, _num_params(model))
    modules = dict(model.named_modules())
    holds = {name: _holds_blocks(m) for name, m in modules.items()}
    candidates = []
    for name, module in modules.items():
        if not name or _classifier_side(name) or not _weighted_layers(module):
            continue
        parent = name.rpartition(".")[0]
        block = holds[parent] and _is_real_block(module)
        top_level = "." not in name
        container = isinstance(module, CONTAINERS) and _is_real_block(module)
        if block or top_level or container:
            count = _num_params(module)
            candidates.append(SplitCandidate(name, count, count / total, block))
    return candidates


def _inside(name: str, outer: str) -> bool:
    return outer == "" or name.startswith(outer + ".")


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def default_split(model: nn.Module) -> list[str]:
    """The default θ2 of a backbone: the last block of its last stage.

    An attribute ``gradfeat_split`` on the model wins. Otherwise the blocks are the
    modules holding two or more conv or linear layers that are elements of the
    model's containers (timm's ``stages``/``blocks``/``layers``, torchvision's
    ``features``/``layerN``/``encoder.layers``, as ``Sequential``, ``ModuleList``
    or ``ModuleDict``) or repeated children of one class (``s1..s4``, ``b1..b7``).
    θ2 is the last block registered, narrowed to the last of the blocks it holds
    in sequence (a stage's last block rather than the whole stage). A block
    holding less than 1 % of the parameters grows to the block that encloses it.
    Norms, pooling and classifier-side layers (``head``, ``fc``, ``classifier``,
    ``pre_logits``) are never chosen. A network with no such block (a plain stack
    of layers) gets its last conv or linear layer.

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
    chain = _last_nested(model, [c for c in split_candidates(model) if c.block])
    if not chain:
        # A plain stack of layers: its last conv or linear layer (one named like a
        # head only when nothing else is there), else its last layer with weights.
        named = [(n, m) for n, m in model.named_modules() if n]
        weighted = [n for n, m in named if isinstance(m, WEIGHTED_LAYERS)]
        trunk = [n for n in weighted if not _classifier_side(n)]
        leaves = [n for n, m in named if _has_params(m) and not any(True for _ in m.children())]
        for choice in (trunk, weighted, leaves):
            if choice:
                return [choice[-1]]
        raise ValueError(f"model {type(model).__name__} has no parameters to linearise")
    for candidate in chain:
        if candidate.share >= MIN_DEFAULT_SHARE:
            return [candidate.name]
    return [chain[-1].name]


def _last_nested(model: nn.Module, blocks: list[SplitCandidate]) -> list[SplitCandidate]:
    """The last block and the blocks enclosing it, innermost first."""
    if not blocks:
        return []
    outer = [b for b in blocks if not any(_inside(b.name, o.name) for o in blocks if o != b)]
    chain = [outer[-1]]
    while True:
        inner = [b for b in blocks if b != chain[0] and _inside(b.name, chain[0].name)]
        direct = [b for b in inner if not any(_inside(b.name, o.name) for o in inner if o != b)]
        # Descend into a sequence of blocks, or the one block a container wraps,
        # never into a lone sub-module (a squeeze-excitation, a branch).
        if not direct:
            return chain
        last = direct[-1]
        in_sequence = sum(_parent(b.name) == _parent(last.name) for b in direct) >= 2
        parent = model.get_submodule(_parent(last.name))
        wrapped = sum(_has_params(c) for c in parent.children()) == 1
        if not (in_sequence or wrapped):
            return chain
        chain.insert(0, last)


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


def split_warnings(model: nn.Module, names: Sequence[str]) -> list[str]:
    """What is odd about a chosen θ2: names that are normalisation layers only, and
    a θ2 under :data:`MIN_DEFAULT_SHARE` of the parameters (a read-out that can hardly
    differ from the linear probe's).

    Args:
        model: The backbone.
        names: θ2 module names, as :func:`resolve_split` returns them.

    Returns:
        One line per finding; empty when there is nothing to say.
    """
    modules = dict(model.named_modules())
    lines = [
        f"θ2 module {name} is a normalisation layer, not a block; the default is "
        "the top block (see --list-splits)"
        for name in names
        if _weighted_layers(modules[name]) == 0
        and any(isinstance(m, NORM_LAYERS) for m in modules[name].modules())
    ]
    total = _num_params(model)
    share = sum(_num_params(modules[name]) for name in names) / max(1, total)
    if share < MIN_DEFAULT_SHARE:
        lines.append(
            f"θ2 ({', '.join(names)}) holds {100 * share:.2g} % of the parameters, "
            f"under {100 * MIN_DEFAULT_SHARE:.0f} %; gradient features of so few "
            "parameters add little to the linear probe"
        )
    return lines
