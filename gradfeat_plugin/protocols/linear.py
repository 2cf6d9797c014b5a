"""``linear``: a linear probe ``w1ᵀf`` on the frozen backbone's pooled features."""

from __future__ import annotations

from typing import List

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from ..linearize._ntk import NTKLinear, effective_parameters
from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier
from ._models import linearized_from


class LinearProtocol(ProtocolClassifier):
    """The activation baseline: a linear classifier on frozen pooled features.

    Its trained head is the probe ω̄ that ``grad`` and ``gradfeat`` expand around.

    Args:
        model: Backbone (forward returns ``(B, d)``) or a ``LinearizedBackbone``.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config.
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are pooled features ``f`` instead of images.
        optimizer: ``adam`` or ``sgd``; ``None`` takes ``cfg.TRAIN.OPTIMIZER``.
        split: θ2 module name(s) (only where the frozen network is cut for caching).
        batch_size_per_device: Per-process batch size, for lr scaling.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> probe = LinearProtocol(BiGANEncoder(width=8), num_classes=10, cfg=get_cfg())
    >>> probe(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    cache = "features"
    lr_key = "LINEAR"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        cfg: CfgNode,
        task: str = "multiclass",
        cached: bool = False,
        optimizer: str | None = None,
        split: SplitSpec = None,
        batch_size_per_device: int | None = None,
    ) -> None:
        backbone = linearized_from(model, split, cfg)
        super().__init__(
            backbone,
            num_classes,
            cfg,
            feature_dim=backbone.num_features,
            task=task,
            cached=cached,
            optimizer=optimizer,
            batch_size_per_device=batch_size_per_device,
        )
        if cfg.MODEL.NTK_HEAD:
            self.classification_head = NTKLinear(backbone.num_features, num_classes)
        self.freeze_all_but_trainable()

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

        An NTK head (``MODEL.NTK_HEAD``) gives its effective weight and bias, those
        of the function it computes.
        """
        weight, bias = effective_parameters(self.classification_head)
        assert bias is not None
        return weight.detach().clone(), bias.detach().clone()
