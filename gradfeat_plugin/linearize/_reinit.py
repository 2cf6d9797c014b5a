"""Re-initialise θ1 or θ2, for the paper's random-versus-pretrained ablation (Table 1)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._graph import _under


@torch.no_grad()
def reinitialize(model: nn.Module, split: list[str], part: str, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with θ1 or θ2 drawn afresh from the layers' own initialisers.

    Every module that owns parameters directly and lies in the chosen part calls its
    ``reset_parameters`` (BatchNorm statistics are reset too). The original model is
    not modified.

    Args:
        model: The pretrained backbone.
        split: θ2 module names.
        part: ``"theta1"`` (everything outside ``split``) or ``"theta2"``.
        seed: Seed of the fresh initialisation.

    Returns:
        The re-initialised copy.

    Raises:
        ValueError: ``part`` is neither ``theta1`` nor ``theta2``.
    """
    if part not in ("theta1", "theta2"):
        raise ValueError(f"part must be 'theta1' or 'theta2', got {part!r}")
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
    return fresh
