"""Supervised pretraining, for transfer experiments (e.g. mnist5k -> digits)."""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn import functional as F

from ._base import PretextModule


class SupervisedPretext(PretextModule):
    """A linear classifier on the backbone, trained end to end on the labels.

    Cross-entropy for multi-class data, binary cross-entropy for multi-label data.

    Args:
        backbone: The network being pretrained.
        cfg: The config.
        num_classes: Number of classes of the dataset.
        task: ``"multiclass"`` or ``"multilabel"``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        cfg: CfgNode,
        num_classes: int = 10,
        task: str = "multiclass",
    ) -> None:
        super().__init__(backbone, cfg)
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.task = task

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self.head(self.backbone(images))
        if self.task == "multilabel":
            loss = F.binary_cross_entropy_with_logits(logits, targets.float())
        else:
            loss = F.cross_entropy(logits, targets)
        self.record_loss(loss)
        return loss

    def pretext_score(self, test) -> dict[str, float]:
        """Top-1 of the supervised head on the test split (multi-class data)."""
        if self.task == "multilabel":
            return {}
        return {
            "supervised_top1": round(
                self.head_accuracy(test, lambda images, targets: (images, targets)), 4
            )
        }
