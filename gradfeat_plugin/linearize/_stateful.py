"""Memoised state that would hide θ2's parameters from the JVP."""

from __future__ import annotations

from torch import nn


def _memo_caches(module: nn.Module) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if "cache" in name and isinstance(value, dict)
    ]


def bypass_eval_caches(model: nn.Module) -> list[nn.Module]:
    """Clear eval-mode memo caches and keep their owners computing afresh.

    timm's LeViT, EfficientFormer and TinyViT attention memoise their attention
    biases (``attention_bias_cache``) in eval mode: the cached tensor carries no
    tangent, so a JVP would silently drop the biases' part, and torch.fx would
    bake one trace's proxy into the next. Their owners are switched to training
    mode, which in those modules only means "recompute from the parameters"; the
    caller keeps them there (see :func:`keep_computing`).

    Args:
        model: The (copied) backbone, modified in place.

    Returns:
        The modules that own such a cache.
    """
    owners = []
    for module in model.modules():
        names = _memo_caches(module)
        if names:
            for name in names:
                getattr(module, name).clear()
            owners.append(module)
    keep_computing(owners)
    return owners


def keep_computing(owners: list[nn.Module]) -> None:
    """Put cache owners back in training mode after a ``.eval()`` of their parent."""
    for module in owners:
        module.training = True
