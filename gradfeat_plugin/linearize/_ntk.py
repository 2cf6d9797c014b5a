"""NTK parametrisation of θ2, as a per-parameter rescaling of the tangent w2."""

from __future__ import annotations

import math

from torch import nn

BIAS_SCALE = math.sqrt(0.1)


def ntk_scales(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Scale applied to each tangent so that ``J·(c ⊙ w2)`` is the NTK-parametrised JVP.

    In the paper's reference code a layer's weight is ``W = c·V`` with
    ``c = sqrt(1/out_channels)`` (``out_features`` for a Linear) and its bias
    ``b = sqrt(0.1)·v``; w2 lives in the ``(V, v)`` coordinates, so the tangent of
    ``W`` is ``c·w2``. Other parameters (norm scales, tokens) keep scale 1.

    Args:
        model: The (folded) backbone.
        names: Parameter names of θ2.

    Returns:
        A mapping from parameter name to its scale.
    """
    scales = {}
    for name in names:
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if leaf == "bias":
            scales[name] = BIAS_SCALE
        elif leaf == "weight" and isinstance(owner, nn.modules.conv._ConvNd):
            scales[name] = math.sqrt(1.0 / owner.out_channels)
        elif leaf == "weight" and isinstance(owner, nn.Linear):
            scales[name] = math.sqrt(1.0 / owner.out_features)
        else:
            scales[name] = 1.0
    return scales
