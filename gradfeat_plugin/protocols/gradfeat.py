"""``gradfeat``: the full model ``w1ᵀf + ω̄ᵀJw2`` (Mu, Liang, Li, ICLR 2020)."""

from __future__ import annotations

from typing import List

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier
from ._models import ablated_parts, install_probe, linearized_from


class GradFeatProtocol(ProtocolClassifier):
    """The first-order expansion of fine-tuning around the probe ω̄.

    Logits are ``w1ᵀf(x) + b + ω̄ᵀ J_θ2(x) w2``; ``w1``/``b`` start at the probe
    installed with :meth:`set_probe` and ``w2`` at zero, so before training the
    model equals the probe exactly. Only ``w1``, ``b`` and ``w2`` train.

    Args:
        model: Backbone (forward returns ``(B, d)``) or a ``LinearizedBackbone``.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config.
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are θ1's outputs (``forward_prefix``) instead of images.
        optimizer: ``adam`` or ``sgd``; ``None`` takes ``cfg.TRAIN.OPTIMIZER``.
        split: θ2 module name(s); ``None`` uses ``cfg.MODEL.SPLIT`` or the default.
        batch_size_per_device: Per-process batch size, for lr scaling.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> model = GradFeatProtocol(BiGANEncoder(width=8), num_classes=10, cfg=get_cfg())
    >>> model.set_probe(torch.randn(10, 64), torch.zeros(10))
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    needs_probe = True
    lr_key = "GRADFEAT"

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
        backbone.ntk_head = bool(cfg.MODEL.NTK_HEAD)
        backbone.reset_classifier(num_classes)
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
        self.classification_head = backbone.head
        self.freeze_all_but_trainable()

    @classmethod
    def can_cache(cls, cfg: CfgNode) -> bool:
        """The run's stored θ1 outputs are the pretrained network's: they serve
        unless the ablation re-initialises θ1."""
        return "theta1" not in ablated_parts(cfg)

    def set_probe(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Install the trained probe: ω̄ (frozen), ``w1``/``b`` from it, ``w2`` at 0."""
        install_probe(self.model, weight, bias, self.cfg)

    def forward(self, images: Inputs) -> Tensor:
        boundary = images if self.cached else self.model.forward_prefix(images)
        return self.model.forward_head(
            torch.cat(self.model.features_from_prefix(boundary), dim=1)
        )

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        return [*self.model.head.parameters(), *self.model.tangents]
