"""The backbones every engine test runs on, built small and in float64."""

from __future__ import annotations

from typing import Callable

import timm
import torch
import torchvision
from torch import nn

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from tests.conftest import randomize_batchnorm


def _torchvision_resnet18() -> nn.Module:
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    return model


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "timm_resnet18": lambda: timm.create_model("resnet18", num_classes=0),
    "timm_convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=0),
    "timm_vit_tiny": lambda: timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2
    ),
    "torchvision_resnet18": _torchvision_resnet18,
    "bigan_encoder": lambda: BiGANEncoder(width=16),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A float64, eval-mode backbone with non-degenerate BatchNorm statistics."""
    torch.manual_seed(seed)
    return randomize_batchnorm(BACKBONES[name]().double().eval(), seed)
