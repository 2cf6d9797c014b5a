"""What every pretraining recipe shares: the backbone, Adam + cosine, loss tracking."""

from __future__ import annotations

from typing import Callable

import torch
from fvcore.common.config import CfgNode
from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


class PretextModule(LightningModule):
    """A LightningModule that trains ``backbone`` on a pretext task.

    Subclasses add their heads and implement ``training_step``, calling
    :meth:`record_loss` with the pretext loss of each step. ``epoch_losses`` holds
    the mean pretext loss of every finished epoch.

    Args:
        backbone: The network being pretrained; the only part that is kept.
        cfg: The config; ``cfg.PRETRAIN`` holds the recipe's hyperparameters.
    """

    # Whether the recipe wants the train split as un-normalised [0, 1] images (it
    # then normalises them itself, after its own augmentations).
    needs_raw_images = False

    def __init__(self, backbone: nn.Module, cfg: CfgNode) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.epoch_losses: list[float] = []
        self._step_losses: list[float] = []

    def train_dataset(self, train: Dataset) -> Dataset:
        """The dataset the recipe trains on, built from the train split's items."""
        return train

    def pretext_score(self, test: Dataset) -> dict[str, float]:
        """The recipe's own task scored on held-out items (``{}`` when it has none)."""
        return {}

    @torch.no_grad()
    def head_accuracy(
        self, test: Dataset, views: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    ) -> float:
        """Top-1 of ``self.head`` on ``views(images, targets)`` of every test batch."""
        was_training = self.training
        self.eval()
        correct = total = 0
        for images, targets in DataLoader(test, batch_size=250):
            inputs, labels = views(images, targets)
            predicted = self.head(self.backbone(inputs)).argmax(dim=1)
            correct += int((predicted == labels).sum())
            total += len(labels)
        self.train(was_training)
        return correct / max(total, 1)

    def record_loss(self, loss: torch.Tensor) -> None:
        """Log one step's pretext loss and add it to the epoch's mean."""
        self._step_losses.append(loss.item())
        self.log("pretext_loss", loss, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        if self._step_losses:
            self.epoch_losses.append(sum(self._step_losses) / len(self._step_losses))
        self._step_losses = []

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.cfg.PRETRAIN.LR,
            weight_decay=self.cfg.PRETRAIN.WEIGHT_DECAY,
        )
        steps = max(1, self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]
