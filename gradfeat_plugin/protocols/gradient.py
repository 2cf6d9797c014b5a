"""``grad``: the gradient baseline ``ω̄ᵀJw2`` (plus a bias), without ``w1ᵀf``."""

from __future__ import annotations

from typing import Any, List

from torch import Tensor, nn
from torch.nn import functional as F

from ..linearize._ntk import effective_parameters
from .gradfeat import GradfeatClassifier


class GradClassifier(GradfeatClassifier):
    """A linear model on the gradient features alone: logits ``ω̄ᵀ J_θ2(x) w2 + b``.

    Built like :class:`GradfeatClassifier` (the same arguments, the same probe
    installation), plus ``bias``; only the tangents ``w2`` (zero-initialised) and
    the bias ``b`` (initialised from the probe's) train, while θ, ω̄ and ``w1``
    stay frozen.

    Args:
        *args: As :class:`GradfeatClassifier`.
        bias: Train a bias ``b``; without it, as in the authors' code, logits at
            ``w2 = 0`` are exactly 0.
        **kwargs: As :class:`GradfeatClassifier`.

    >>> import torch
    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> model = GradClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> model.set_probe(torch.randn(10, 64), torch.zeros(10))
    >>> model(torch.randn(2, 3, 32, 32)).abs().max().item()
    0.0
    """

    def __init__(self, *args: Any, bias: bool = True, **kwargs: Any) -> None:
        self.use_bias = bias
        super().__init__(*args, **kwargs)
        self.hparams["bias"] = bias

    def logits_from_features(self, features: Tensor, jvp: Tensor) -> Tensor:
        """Logits from ``J·w2`` alone (``f`` is not used); no bias without ``bias``."""
        bias = effective_parameters(self.model.head)[1] if self.use_bias else None
        return F.linear(jvp, self.model.probe_weight, bias)

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        bias = [self.model.head.bias] if self.use_bias else []
        return [*bias, *self.model.tangents]
