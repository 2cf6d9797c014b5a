"""A fixed affine map that standardises pooled features before a head."""

from __future__ import annotations

import torch
from torch import nn


class FeatureStandardization(nn.Module):
    """``(f - mean) / std`` with fixed statistics (identity until they are set).

    Placed between a frozen backbone and a linear head it changes nothing the head
    can express, only the conditioning of its training: features that share a large
    offset make Adam's steps crawl along the other directions.

    Args:
        num_features: Feature dimension ``d``.

    >>> std = FeatureStandardization(2)
    >>> std.set(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
    >>> std(torch.tensor([[3.0, 6.0]]))
    tensor([[1., 1.]])
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean) / self.std

    @torch.no_grad()
    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Install the statistics (a zero std is replaced by 1)."""
        self.mean.copy_(mean)
        self.std.copy_(self.usable_std(std))

    @staticmethod
    def usable_std(std: torch.Tensor) -> torch.Tensor:
        """``std`` with zeros (constant features) replaced by 1: what :meth:`set`
        divides by."""
        return torch.where(std > 0, std, torch.ones_like(std))

    @staticmethod
    def statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of ``(N, d)`` features."""
        return features.mean(dim=0), features.std(dim=0)
