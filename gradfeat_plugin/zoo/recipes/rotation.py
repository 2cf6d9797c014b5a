"""Rotation prediction (Gidaris et al., ICLR 2018): 4-way, labels unused."""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn import functional as F

from ._base import PretextModule

NUM_ROTATIONS = 4


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four 90° rotations of a batch and their rotation labels.

    Args:
        images: ``B×C×H×W`` square images.

    Returns:
        ``4B×C×H×W`` images (rotation-major) and ``4B`` labels in ``0..3``.

    >>> views, labels = rotate_batch(torch.zeros(2, 1, 4, 4))
    >>> views.shape, labels.tolist()
    (torch.Size([8, 1, 4, 4]), [0, 0, 1, 1, 2, 2, 3, 3])
    """
    views = torch.cat(
        [torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)]
    )
    labels = torch.arange(NUM_ROTATIONS, device=images.device)
    return views, labels.repeat_interleave(images.shape[0])


class RotationPretext(PretextModule):
    """Predict which of four rotations was applied; every image is seen in all four.

    Args:
        backbone: The network being pretrained.
        cfg: The config.
        num_classes: Unused (the recipe uses no labels).
        task: Unused.
    """

    def __init__(
        self, backbone: nn.Module, cfg: CfgNode, num_classes: int = 0, task: str = ""
    ) -> None:
        super().__init__(backbone, cfg)
        self.head = nn.Linear(backbone.num_features, NUM_ROTATIONS)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _ = batch
        views, labels = rotate_batch(images)
        loss = F.cross_entropy(self.head(self.backbone(views)), labels)
        self.record_loss(loss)
        return loss

    def pretext_score(self, test) -> dict[str, float]:
        """Accuracy of the rotation head on all four rotations of every test image."""
        return {
            "rotation_top1": round(
                self.head_accuracy(test, lambda images, _: rotate_batch(images)), 4
            )
        }
