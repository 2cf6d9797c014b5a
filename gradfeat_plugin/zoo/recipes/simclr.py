"""SimCLR (Chen et al., 2020) with lightly's loss, projection head and transforms."""

from __future__ import annotations

from typing import Callable

import torch
from fvcore.common.config import CfgNode
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_pil_image

from ._base import PretextModule


def digit_simclr_transform(cfg: CfgNode, pretrained_cfg: dict) -> SimCLRTransform:
    """lightly's ``SimCLRTransform`` adapted to small grayscale digits.

    No flips (they change a digit's meaning), no hue, saturation or random
    grayscale (there is no colour), milder crops and blur.

    Args:
        cfg: The config (``cfg.PRETRAIN.SIMCLR``).
        pretrained_cfg: The backbone's input size, mean and std.
    """
    simclr = cfg.PRETRAIN.SIMCLR
    return SimCLRTransform(
        input_size=pretrained_cfg["input_size"][-1],
        cj_prob=simclr.CJ_PROB,
        cj_strength=simclr.CJ_STRENGTH,
        cj_sat=0.0,
        cj_hue=0.0,
        min_scale=simclr.MIN_SCALE,
        random_gray_scale=0.0,
        gaussian_blur=simclr.BLUR_PROB,
        sigmas=tuple(simclr.BLUR_SIGMAS),
        hf_prob=0.0,
        normalize={
            "mean": list(pretrained_cfg["mean"]),
            "std": list(pretrained_cfg["std"]),
        },
    )


class MultiViewDataset(Dataset):
    """Items of ``base`` (``[0, 1]`` tensors) turned into lists of augmented views.

    Args:
        base: A dataset of un-normalised ``C×H×W`` tensors in ``[0, 1]``.
        transform: A lightly multi-view transform taking a PIL image.
    """

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, target = self.base[index]
        return self.transform(to_pil_image(image)), target


class SimCLRPretext(PretextModule):
    """Contrast two augmented views of each image (NT-Xent over the batch).

    Args:
        backbone: The network being pretrained.
        cfg: The config.
        num_classes: Unused (the recipe uses no labels).
        task: Unused.
    """

    needs_raw_images = True

    def __init__(
        self, backbone: nn.Module, cfg: CfgNode, num_classes: int = 0, task: str = ""
    ) -> None:
        super().__init__(backbone, cfg)
        simclr = cfg.PRETRAIN.SIMCLR
        self.projection = SimCLRProjectionHead(
            backbone.num_features, simclr.HIDDEN_DIM, simclr.OUTPUT_DIM
        )
        self.criterion = NTXentLoss(temperature=simclr.TEMPERATURE)

    def train_dataset(self, train: Dataset) -> Dataset:
        transform = digit_simclr_transform(self.cfg, self.backbone.pretrained_cfg)
        return MultiViewDataset(train, transform)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (view0, view1), _ = batch
        z = self.projection(self.backbone(torch.cat([view0, view1])))
        z0, z1 = z.chunk(2)
        loss = self.criterion(z0, z1)
        self.record_loss(loss)
        return loss
