"""The BiGAN/ALI-style convolutional encoder used as a base network in the paper."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2),
    )


class BiGANEncoder(nn.Module):
    """Four conv-BN-leaky-ReLU blocks and global average pooling, for 32×32 images.

    Blocks ``conv1``-``conv3`` halve the resolution (4×4 kernels, stride 2);
    ``conv4`` is a 3×3 stride-1 block, the default θ2. Features are
    ``8 * width``-dimensional.

    Args:
        in_chans: Input channels.
        width: Channels of the first block (doubled by each of the next two).
        img_size: Input resolution, recorded in ``pretrained_cfg``.

    >>> BiGANEncoder()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """

    gradfeat_split = "conv4"

    def __init__(self, in_chans: int = 3, width: int = 64, img_size: int = 32) -> None:
        super().__init__()
        self.conv1 = _block(in_chans, width, 4, 2)
        self.conv2 = _block(width, 2 * width, 4, 2)
        self.conv3 = _block(2 * width, 4 * width, 4, 2)
        self.conv4 = _block(4 * width, 8 * width, 3, 1)
        self.num_features = 8 * width
        self.pretrained_cfg = {
            "input_size": (in_chans, img_size, img_size),
            "mean": (0.5,) * in_chans,
            "std": (0.5,) * in_chans,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled top feature map."""
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


def bigan_encoder(pretrained: bool = False, **kwargs: int) -> BiGANEncoder:
    """Entry-point factory; ``pretrained`` weights come from the zoo, not from here."""
    if pretrained:
        raise ValueError(
            "bigan_encoder has no published weights; use zoo:bigan_* or --weights PATH"
        )
    return BiGANEncoder(**kwargs)
