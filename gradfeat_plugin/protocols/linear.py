"""``linear``: a linear probe ``w1ᵀf`` on the frozen backbone's pooled features."""

from __future__ import annotations

from typing import Any, List, Sequence

import torch
from torch import Tensor, nn

from ..linearize._ntk import NTKLinear, effective_parameters
from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier, check_feature_dim
from ._models import linearized_from


class LinearProbeClassifier(ProtocolClassifier):
    """The activation baseline: a linear classifier on frozen pooled features.

    lightly's ``LinearClassifier`` arguments, then plain keywords. Its trained head
    is the probe ω̄ that ``grad`` and ``gradfeat`` expand around.

    Args:
        model: Backbone (forward returns ``(B, d)``) or a ``LinearizedBackbone``.
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate (the paper's Adam: 1e-3).
        feature_dim: ``d``; checked against the model when given.
        num_classes: Number of classes (labels, for multi-label tasks).
        topk: Top-k accuracies to log.
        split: θ2 module name(s), only where the frozen network is cut for caching
            (default: the family's top block).
        fold_bn: Fold θ2's BatchNorms (of the network it is cut from).
        ntk: NTK parametrisation of that network's θ2 (does not change ``f``).
        engine: Its JVP engine (the probe uses none).
        ntk_head: An NTK-parametrised head (:class:`NTKLinear`): the same
            functions, other optimiser steps, as in the authors' code.
        **kwargs: ``task``, ``cached``, ``optimizer``, ``betas``, ``weight_decay``,
            ``momentum``, ``scale_lr``, ``lr_decay``, ``lr_decay_every``,
            ``clip_grad_norm``, ``seed``: see :class:`ProtocolClassifier`.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> probe = LinearProbeClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> probe(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    cache = "features"

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int = 64,
        lr: float = 1e-3,
        feature_dim: int | None = None,
        num_classes: int = 1000,
        topk: Sequence[int] = (1, 5),
        *,
        split: SplitSpec = None,
        fold_bn: bool = True,
        ntk: bool = True,
        engine: str = "auto",
        ntk_head: bool = False,
        **kwargs: Any,
    ) -> None:
        arguments = dict(locals(), **kwargs)
        backbone = linearized_from(model, split, fold_bn, ntk, engine)
        check_feature_dim(feature_dim, backbone.num_features)
        super().__init__(
            backbone,
            batch_size_per_device,
            lr,
            backbone.num_features,
            num_classes,
            topk,
            **kwargs,
        )
        if ntk_head:
            self.classification_head = NTKLinear(backbone.num_features, num_classes)
        self.freeze_all_but_trainable()
        arguments.update(split=backbone.split, feature_dim=backbone.num_features)
        self.save_arguments(arguments, "kwargs")

    def forward(self, images: Inputs) -> Tensor:
        if self.cached:
            features = images
        else:
            with torch.no_grad():
                boundary = self.model.forward_prefix(images)
                features = self.model.activations_from_prefix(boundary)
        return self.classification_head(self.model.standardize(features))

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        return list(self.classification_head.parameters())

    def probe(self) -> tuple[Tensor, Tensor]:
        """The trained head as ``(weight, bias)``: ω̄ for ``grad`` and ``gradfeat``.

        An NTK head gives its effective weight and bias, those of the function it
        computes.
        """
        weight, bias = effective_parameters(self.classification_head)
        assert bias is not None
        return weight.detach().clone(), bias.detach().clone()
