"""Fold BatchNorm layers of θ2 into the convolutions that precede them."""

from __future__ import annotations

import torch
from torch import fx, nn

from ._graph import _BackboneTracer, _under

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs_from_graph(model: nn.Module, split: list[str]) -> list[tuple[str, str]]:
    graph = _BackboneTracer().trace_images(model)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _under(node.target, split):
            continue
        norm = model.get_submodule(node.target)
        if not isinstance(norm, _NORMS) or norm.running_var is None:
            continue
        src = node.args[0] if node.args else None
        while (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(model.get_submodule(src.target), nn.Identity)
            and len(src.users) == 1
        ):
            src = src.args[0]
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and _under(src.target, split)
            and isinstance(model.get_submodule(src.target), _CONVS)
            and len(src.users) == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def _pairs_from_order(model: nn.Module, split: list[str]) -> list[tuple[str, str]]:
    """Registration order (conv then its norm), used when fx cannot trace."""
    pairs, last_conv = [], None
    for name, module in model.named_modules():
        if not _under(name, split):
            continue
        if isinstance(module, _CONVS):
            last_conv = (name, module)
        elif isinstance(module, _NORMS) and module.running_var is not None and last_conv:
            if last_conv[1].out_channels == module.num_features:
                pairs.append((last_conv[0], name))
            last_conv = None
    return pairs


def _norm_replacement(norm: nn.Module) -> nn.Module:
    # timm's BatchNormAct2d applies dropout and an activation after normalising.
    tail = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m]
    if not tail:
        return nn.Identity()
    return tail[0] if len(tail) == 1 else nn.Sequential(*tail)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, split: list[str]) -> list[tuple[str, str]]:
    """Fold each eval-mode BatchNorm of θ2 into its preceding convolution, in place.

    The convolution's weight becomes ``W * γ/σ`` and it gains (or updates) a bias
    ``β + (b − μ) γ/σ``; the norm is replaced by an identity (keeping any activation
    a fused norm-act layer carries). ``model(x)`` is unchanged in eval mode.

    Args:
        model: The backbone to modify (pass a copy to keep the original).
        split: θ2 module names; norms outside them are left alone.

    Returns:
        The ``(conv_name, norm_name)`` pairs that were folded.
    """
    try:
        pairs = _pairs_from_graph(model, split)
    except Exception:  # untraceable model: fall back to the module order
        pairs = _pairs_from_order(model, split)
    for conv_name, norm_name in pairs:
        conv = model.get_submodule(conv_name)
        norm = model.get_submodule(norm_name)
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        conv.weight.copy_(conv.weight * scale.reshape(shape))
        old_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        conv.bias = nn.Parameter(
            (old_bias * scale + shift).to(conv.weight.dtype),
            requires_grad=conv.weight.requires_grad,
        )
        parent_name, _, attr = norm_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _norm_replacement(norm))
    return pairs
