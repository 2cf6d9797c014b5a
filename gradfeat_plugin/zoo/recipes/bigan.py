"""BiGAN / ALI (Donahue et al. 2016; Dumoulin et al. 2016) for 32×32 images.

An encoder E (the backbone plus a linear map to the latent), a DCGAN-style
generator G and a discriminator D on joint pairs ``(x, z)``. D learns to tell
``(x, E(x))`` from ``(G(z), z)``; E and G learn to fool it. Only E's backbone is
kept.
"""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn import functional as F

from ...errors import GradfeatError
from ._base import PretextModule

IMAGE_SIZE = 32


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class Generator(nn.Module):
    """DCGAN generator: a latent vector to a ``C×32×32`` image in ``[-1, 1]``.

    Args:
        latent_dim: Size of ``z``.
        width: Channels of the last hidden layer (×2, ×4 below it).
        channels: Image channels.
    """

    def __init__(self, latent_dim: int, width: int, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
            *_up(4 * width, 2 * width),
            *_up(2 * width, width),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class JointDiscriminator(nn.Module):
    """Scores a pair ``(x, z)``: convolutions on ``x``, an MLP on ``z``, a joint MLP.

    Args:
        latent_dim: Size of ``z``.
        width: Channels of the first convolution.
        channels: Image channels.
        dropout: Dropout of the joint layers.
    """

    def __init__(
        self, latent_dim: int, width: int, channels: int, dropout: float
    ) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        hidden = 8 * width
        self.latent = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(4 * width * (IMAGE_SIZE // 8) ** 2 + hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.image(x), self.latent(z)], dim=1)).squeeze(1)


class BiGANPretext(PretextModule):
    """Adversarial feature learning; the pretext loss recorded is D's loss.

    Args:
        backbone: The encoder being pretrained (``bigan_encoder`` or the paper's
            ``bigan_ali``); inputs must be 32×32 and normalised to ``[-1, 1]`` like
            G's output. A linear map takes its ``num_features`` (512 for
            ``bigan_ali``) to the latent that G and D share.
        cfg: The config (``cfg.PRETRAIN.BIGAN``).
        num_classes: Unused (the recipe uses no labels).
        task: Unused.

    Raises:
        GradfeatError: If the backbone does not take 32×32 inputs.
    """

    def __init__(
        self, backbone: nn.Module, cfg: CfgNode, num_classes: int = 0, task: str = ""
    ) -> None:
        super().__init__(backbone, cfg)
        channels, height, width = backbone.pretrained_cfg["input_size"]
        if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            raise GradfeatError(
                "the bigan recipe needs a 32x32 backbone, got input size "
                f"{height}x{width}"
            )
        bigan = cfg.PRETRAIN.BIGAN
        self.to_latent = nn.Linear(backbone.num_features, bigan.LATENT_DIM)
        self.generator = Generator(bigan.LATENT_DIM, bigan.WIDTH, channels)
        self.discriminator = JointDiscriminator(
            bigan.LATENT_DIM, bigan.WIDTH, channels, bigan.DROPOUT
        )
        self.automatic_optimization = False

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """E(x): the latent code of images."""
        return self.to_latent(self.backbone(images))

    def training_step(self, batch, batch_idx: int) -> None:
        images, _ = batch
        opt_d, opt_eg = self.optimizers()
        z = torch.randn(
            images.shape[0], self.cfg.PRETRAIN.BIGAN.LATENT_DIM, device=self.device
        )
        fake = self.generator(z)
        code = self.encode(images)
        real_label = torch.ones(images.shape[0], device=self.device)
        fake_label = torch.zeros_like(real_label)

        d_real = self.discriminator(images, code.detach())
        d_fake = self.discriminator(fake.detach(), z)
        loss_d = F.binary_cross_entropy_with_logits(
            d_real, real_label
        ) + F.binary_cross_entropy_with_logits(d_fake, fake_label)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()

        # E and G swap the labels (the non-saturating form of the minimax game).
        d_real = self.discriminator(images, code)
        d_fake = self.discriminator(fake, z)
        loss_eg = F.binary_cross_entropy_with_logits(
            d_real, fake_label
        ) + F.binary_cross_entropy_with_logits(d_fake, real_label)
        opt_eg.zero_grad()
        self.manual_backward(loss_eg)
        opt_eg.step()
        for scheduler in self.lr_schedulers():
            scheduler.step()

        self.record_loss(loss_d.detach())
        self.log("encoder_generator_loss", loss_eg.detach())

    def configure_optimizers(self):
        bigan = self.cfg.PRETRAIN.BIGAN
        steps = max(1, self.trainer.estimated_stepping_batches)
        eg_params = [
            *self.backbone.parameters(),
            *self.to_latent.parameters(),
            *self.generator.parameters(),
        ]
        optimizers = [
            torch.optim.Adam(
                self.discriminator.parameters(), bigan.LR, tuple(bigan.BETAS)
            ),
            torch.optim.Adam(eg_params, bigan.LR, tuple(bigan.BETAS)),
        ]
        schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps)
            for o in optimizers
        ]
        return optimizers, schedulers
