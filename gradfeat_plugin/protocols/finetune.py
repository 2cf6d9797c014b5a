"""``finetune``: θ2 and the head trained nonlinearly (optionally the whole network)."""

from __future__ import annotations

from typing import List

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from ..errors import GradfeatError
from ..linearize import LinearizedBackbone
from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier
from ._models import SplitNetwork, split_from


class FinetuneProtocol(ProtocolClassifier):
    """Fine-tuning: θ2 (the top block(s)) and a linear head, θ1 frozen in eval mode.

    With ``cfg.FINETUNE.WHOLE_NETWORK`` every backbone parameter trains and inputs
    are always images. The paper reports the better of an Adam and an SGD run
    (``cfg.FINETUNE.OPTIMIZERS``); pass ``optimizer`` to pick one run.

    Args:
        model: Backbone whose forward returns ``(B, d)``; it is copied.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config.
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are θ1's outputs (``forward_prefix``) instead of images.
        optimizer: ``adam`` or ``sgd``; ``None`` takes ``cfg.FINETUNE.OPTIMIZERS[0]``.
        split: θ2 module name(s); ``None`` uses ``cfg.MODEL.SPLIT`` or the default.
        batch_size_per_device: Per-process batch size, for lr scaling.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> import torch
    >>> model = FinetuneProtocol(BiGANEncoder(width=8), num_classes=10, cfg=get_cfg())
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    lr_key = "FINETUNE"

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
        if isinstance(model, LinearizedBackbone):
            raise ValueError("finetune needs the original backbone, not a linearised")
        self.whole_network = bool(cfg.FINETUNE.WHOLE_NETWORK)
        if self.whole_network and cached:
            raise GradfeatError(
                "FINETUNE.WHOLE_NETWORK trains θ1 too, so its outputs cannot be "
                "cached; set TRAIN.CACHE_FEATURES False"
            )
        network = SplitNetwork(
            model, split_from(split, cfg), frozen_prefix=not self.whole_network
        )
        feature_dim = network.num_features or _feature_dim(network, model)
        super().__init__(
            network,
            num_classes,
            cfg,
            feature_dim=feature_dim,
            task=task,
            cached=cached,
            optimizer=optimizer or cfg.FINETUNE.OPTIMIZERS[0],
            batch_size_per_device=batch_size_per_device,
        )
        self.freeze_all_but_trainable()

    # Fine-tuning moves the features, so its head reads them unstandardised.
    standardizes_features = False

    @classmethod
    def optimizer_names(cls, cfg: CfgNode) -> List[str]:
        """Every optimiser of ``cfg.FINETUNE.OPTIMIZERS`` (the best is reported)."""
        return list(cfg.FINETUNE.OPTIMIZERS)

    @classmethod
    def can_cache(cls, cfg: CfgNode) -> bool:
        """θ1's outputs are fixed unless the whole network trains."""
        return not cfg.FINETUNE.WHOLE_NETWORK

    def clip_grad_norm(self) -> float:
        """``FINETUNE.CLIP_GRAD_NORM``, so that one large step cannot blow up θ2."""
        return float(self.cfg.FINETUNE.CLIP_GRAD_NORM)

    def forward(self, images: Inputs) -> Tensor:
        if self.cached:
            features = self.model.forward_suffix(images)
        else:
            features = self.model.forward_suffix(self.model.forward_prefix(images))
        return self.classification_head(features)

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        backbone = (
            list(self.model.parameters()) if self.whole_network else self.model.theta2()
        )
        return [*backbone, *self.classification_head.parameters()]


@torch.no_grad()
def _feature_dim(network: SplitNetwork, model: nn.Module) -> int:
    """Pooled feature size of a backbone without ``num_features`` (one eval pass)."""
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    size = pretrained_cfg.get("input_size", (3, 224, 224))
    param = next(network.parameters())
    return int(network.eval()(param.new_zeros(2, *size)).shape[1])
