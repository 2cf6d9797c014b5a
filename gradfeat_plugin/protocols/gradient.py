"""``grad``: the gradient baseline ``ω̄ᵀJw2`` (plus a bias), without ``w1ᵀf``."""

from __future__ import annotations

from typing import List

from torch import Tensor, nn
from torch.nn import functional as F

from ..linearize._ntk import effective_parameters
from ._base import Inputs
from .gradfeat import GradFeatProtocol


class GradProtocol(GradFeatProtocol):
    """A linear model on the gradient features alone: logits ``ω̄ᵀ J_θ2(x) w2 + b``.

    Built like :class:`GradFeatProtocol` (same arguments, same probe installation);
    only the tangents ``w2`` (zero-initialised) and the bias ``b`` (initialised from
    the probe's) train, while θ, ω̄ and ``w1`` stay frozen. With ``GRAD.BIAS`` off
    there is no ``b``, as in the authors' code: logits at ``w2 = 0`` are exactly 0.

    >>> import torch
    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> model = GradProtocol(BiGANEncoder(width=8), num_classes=10, cfg=get_cfg())
    >>> model.set_probe(torch.randn(10, 64), torch.zeros(10))
    >>> model(torch.randn(2, 3, 32, 32)).abs().max().item()
    0.0
    """

    lr_key = "GRAD"

    def forward(self, images: Inputs) -> Tensor:
        boundary = images if self.cached else self.model.forward_prefix(images)
        _, jvp = self.model.features_from_prefix(boundary)
        bias = effective_parameters(self.model.head)[1] if self.cfg.GRAD.BIAS else None
        return F.linear(jvp, self.model.probe_weight, bias)

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        bias = [self.model.head.bias] if self.cfg.GRAD.BIAS else []
        return [*bias, *self.model.tangents]
