"""Re-initialise θ1 or θ2, for the paper's random-versus-pretrained ablation (Table 1)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ._fold import fold_batchnorm
from ._graph import _under
from ._ntk import BIAS_SCALE

#: How the random parts are drawn: the layers' own initialisers, or the authors'.
INITS = ("default", "ntk")


def _ntk_weight_scale(module: nn.Module) -> float | None:
    """``√(1/out_channels)`` of a convolution, ``√(1/out_features)`` of a linear
    layer; ``None`` for anything else."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return math.sqrt(1.0 / module.out_channels)
    if isinstance(module, nn.Linear):
        return math.sqrt(1.0 / module.out_features)
    return None


def _draw_ntk(model: nn.Module, split: list[str]) -> None:
    """The authors' ``NTKConv2d.init()`` on θ2's convolutions and linear layers:
    parameters ``N(0, 1)`` in the NTK coordinates, so effective weights
    ``√(1/out)·N(0, 1)`` and biases ``√0.1·N(0, 1)``."""
    for name, module in model.named_modules():
        scale = _ntk_weight_scale(module)
        if not name or not _under(name, split) or scale is None:
            continue
        module.weight.copy_(scale * torch.randn_like(module.weight))
        if module.bias is not None:
            module.bias.copy_(BIAS_SCALE * torch.randn_like(module.bias))


@torch.no_grad()
def reinitialize(
    model: nn.Module, split: list[str], part: str, seed: int = 0, init: str = "default"
) -> nn.Module:
    """A copy of ``model`` with θ1 or θ2 drawn afresh.

    Every module that owns parameters directly and lies in the chosen part calls its
    ``reset_parameters`` (BatchNorm statistics are reset too). With ``init="ntk"``
    (θ2 only) θ2's reset BatchNorms are then folded into their convolutions and
    every convolution and linear layer of θ2 is drawn as the authors'
    ``NTKConv2d.init()`` draws it: effective weight ``√(1/out_channels)·N(0, 1)``
    (``out_features`` for a linear layer), bias ``√0.1·N(0, 1)``. The original model
    is not modified.

    Args:
        model: The pretrained backbone.
        split: θ2 module names.
        part: ``"theta1"`` (everything outside ``split``) or ``"theta2"``.
        seed: Seed of the fresh initialisation.
        init: ``default`` (the layers' own initialisers) or ``ntk``.

    Returns:
        The re-initialised copy.

    Raises:
        ValueError: ``part`` is neither ``theta1`` nor ``theta2``, ``init`` is not
            one of :data:`INITS`, or ``ntk`` is asked of θ1.
    """
    if part not in ("theta1", "theta2"):
        raise ValueError(f"part must be 'theta1' or 'theta2', got {part!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "ntk" and part != "theta2":
        raise ValueError("init='ntk' draws θ2 only; θ1 takes its layers' initialisers")
    fresh = copy.deepcopy(model)
    devices = {p.device for p in fresh.parameters()}
    with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]):
        torch.manual_seed(seed)
        for name, module in fresh.named_modules():
            inside = _under(name, split) if name else False
            if inside != (part == "theta2"):
                continue
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if any(True for _ in module.parameters(recurse=False)) and hasattr(
                module, "reset_parameters"
            ):
                module.reset_parameters()
        if init == "ntk":
            # The authors' θ2 has no BatchNorm: the reset ones (the identity, up
            # to eps) are folded, so every convolution has the bias they draw.
            was_training = fresh.training
            fold_batchnorm(fresh.eval(), split)
            fresh.train(was_training)
            _draw_ntk(fresh, split)
    return fresh
