"""BiGAN/ALI convolutional encoders for 32×32 images.

``BiGANALIEncoder`` is the paper's base network (ALI's CIFAR-10 encoder, Dumoulin
et al. 2016): five unpadded convolutions down to a 1×1 map. ``BiGANEncoder`` is a
smaller padded variant that pools a 4×4 map; the zoo's CPU-sized models use it.
"""

from __future__ import annotations

import numbers
from typing import Any

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


#: ALI's encoder: (out channels, kernel, stride) of conv1-conv5, no padding.
ALI_LAYERS: tuple[tuple[int, int, int], ...] = (
    (32, 5, 1),
    (64, 4, 2),
    (128, 4, 1),
    (256, 4, 2),
    (512, 4, 1),
)
ALI_IMAGE_SIZE = 32


def _ali_block(
    cin: int, cout: int, kernel: int, stride: int, slope: float
) -> nn.Sequential:
    # No bias: the BatchNorm that follows has its own shift.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=0, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(slope),
    )


class BiGANALIEncoder(nn.Module):
    """The paper's BiGAN encoder: ALI's five conv-BN-leaky-ReLU blocks, 32×32 to 1×1.

    ``conv1`` is 5×5 stride 1 to 32 channels, then 4×4 convolutions with strides
    2, 1, 2, 1 to 64, 128, 256 and 512 channels, none padded: the maps are
    32→28→13→10→4→1. The paper's Table 1 θ2 settings are ``conv5``, ``conv4 conv5``
    and ``conv3 conv4 conv5``; ``conv5`` is the default. The features are the 512
    channels of the 1×1 map (a larger input is average-pooled). ALI's encoder goes on
    with 1×1 convolutions to the latent; in the ``bigan`` recipe a linear map to the
    latent takes their place.

    Args:
        in_chans: Input channels.
        leaky_slope: Negative slope of the leaky ReLUs: 0.01 as in ALI, 0.2 for the
            Wasserstein variant.

    Raises:
        ValueError: If ``in_chans`` is not a positive integer or ``leaky_slope`` is
            not in ``[0, 1)``.

    >>> BiGANALIEncoder()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """

    gradfeat_split = "conv5"

    def __init__(self, in_chans: int = 3, leaky_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        if (
            isinstance(leaky_slope, bool)
            or not isinstance(leaky_slope, numbers.Real)
            or not 0 <= leaky_slope < 1
        ):
            raise ValueError(f"leaky_slope must be in [0, 1), got {leaky_slope!r}")
        self.leaky_slope = float(leaky_slope)
        cin = in_chans
        for i, (cout, kernel, stride) in enumerate(ALI_LAYERS):
            block = _ali_block(cin, cout, kernel, stride, self.leaky_slope)
            self.add_module(f"conv{i + 1}", block)
            cin = cout
        self.num_features = cin
        self.pretrained_cfg = {
            "input_size": (in_chans, ALI_IMAGE_SIZE, ALI_IMAGE_SIZE),
            "mean": (0.5,) * in_chans,
            "std": (0.5,) * in_chans,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled top feature map (1×1 for a 32×32 input)."""
        # Written without checks on x so that torch.fx can trace it (θ1 caching).
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        return self.conv5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


def bigan_ali(pretrained: bool = False, **kwargs: Any) -> BiGANALIEncoder:
    """Entry-point factory of the paper's encoder; weights come from ``--weights PATH``.

    Args:
        pretrained: Must be false: there are no published weights.
        **kwargs: ``in_chans``, ``leaky_slope`` (see :class:`BiGANALIEncoder`).

    Raises:
        ValueError: If ``pretrained`` is requested.
    """
    if pretrained:
        raise ValueError(
            "bigan_ali has no published weights; pretrain it with "
            "benchmarks/pretrain.py --method bigan --arch bigan_ali and pass "
            "--weights PATH"
        )
    return BiGANALIEncoder(**kwargs)
