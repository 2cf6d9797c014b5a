"""``grad``: the gradient baseline ``ω̄ᵀJw2`` (plus a bias), without ``w1ᵀf``."""

from __future__ import annotations

from typing import List

from fvcore.common.config import CfgNode
from torch import Tensor, nn
from torch.nn import functional as F

from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier
from ._models import ablated_parts, install_probe, linearized_from


class GradProtocol(ProtocolClassifier):
    """A linear model on the gradient features alone: logits ``ω̄ᵀ J_θ2(x) w2 + b``.

    Only the tangents ``w2`` (zero-initialised) and the bias ``b`` (initialised
    from the probe's) train; θ, ω̄ and ``w1`` stay frozen. Install ω̄ with
    :meth:`set_probe` before training.

    Args:
        model: Backbone (forward returns ``(B, d)``) or a ``LinearizedBackbone``.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config.
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are θ1's outputs (``forward_prefix``) instead of images.
        optimizer: ``adam`` or ``sgd``; ``None`` takes ``cfg.TRAIN.OPTIMIZER``.
        split: θ2 module name(s); ``None`` uses ``cfg.MODEL.SPLIT`` or the default.
        batch_size_per_device: Per-process batch size, for lr scaling.
    """

    needs_probe = True

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
        """The run's stored θ1 outputs belong to the pretrained network, not to an
        ablated one."""
        return not ablated_parts(cfg)

    def set_probe(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Install the trained probe ω̄ (frozen); the bias starts from ``bias``."""
        install_probe(self.model, weight, bias, self.cfg)

    def forward(self, images: Inputs) -> Tensor:
        boundary = images if self.cached else self.model.forward_prefix(images)
        _, jvp = self.model.features_from_prefix(boundary)
        return F.linear(jvp, self.model.probe_weight, self.model.head.bias)

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        return [self.model.head.bias, *self.model.tangents]
