"""Shared test fixtures: small real backbones with realistic (non-degenerate) BN."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorms trained-looking statistics.

    Fresh ResNets zero-initialise the last BN of each block, which puts exact zeros
    at the ReLU kinks where finite differences are undefined.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return model
