"""Backbone architectures the zoo pretrains: a small ResNet and the BiGAN encoders."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from timm.models.resnet import BasicBlock
from torch import nn

from ..backbones.bigan import BiGANALIEncoder, BiGANEncoder
from ..errors import GradfeatError


def _stage(cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
        )
    blocks = [BasicBlock(cin, cout, stride, downsample)]
    blocks += [BasicBlock(cout, cout) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet small enough to pretrain on a CPU in a minute or two.

    A 3×3 stem, then one stage of timm ``BasicBlock`` residual blocks per entry of
    ``widths``; every stage after the first halves the resolution. The default θ2
    (``gradfeat_split``) is the last residual block of the last stage.

    Args:
        in_chans: Input channels.
        widths: Output channels of each stage (the last is ``num_features``).
        depths: Residual blocks per stage.
        stem_stride: Stride of the stem convolution.
        img_size: Input resolution, recorded in ``pretrained_cfg``.

    >>> SmallResNet()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 128])
    """

    def __init__(
        self,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 1, 1),
        stem_stride: int = 2,
        img_size: int = 32,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError("widths and depths must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        cin = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            self.add_module(
                f"layer{i + 1}", _stage(cin, width, depth, 1 if i == 0 else 2)
            )
            cin = width
        self.num_stages = len(widths)
        self.num_features = widths[-1]
        self.gradfeat_split = f"layer{len(widths)}.{depths[-1] - 1}"
        self.pretrained_cfg = {
            "input_size": (in_chans, img_size, img_size),
            "mean": (0.5,) * in_chans,
            "std": (0.5,) * in_chans,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled top feature map."""
        x = self.stem(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


_ARCHS: dict[str, Callable[[], nn.Module]] = {
    "resnet_small": SmallResNet,
    "bigan_encoder": BiGANEncoder,
    "bigan_encoder_w32": lambda: BiGANEncoder(width=32),
    # The paper's encoder (ALI's), for pretraining on CIFAR-10/100 and SVHN at 32 px.
    "bigan_ali": BiGANALIEncoder,
}


def list_archs() -> list[str]:
    """Names accepted by :func:`create_arch` and ``pretrain.py --arch``."""
    return sorted(_ARCHS)


def create_arch(name: str) -> nn.Module:
    """A randomly initialised zoo architecture.

    Args:
        name: One of :func:`list_archs`.

    Raises:
        GradfeatError: If the name is unknown.
    """
    if name not in _ARCHS:
        raise GradfeatError(f"unknown arch {name!r}; choose one of {list_archs()}")
    return _ARCHS[name]()
