"""lightly benchmark-style: pretrain SimCLR, then score it with kNN, a linear probe and gradfeat.

    python benchmarks/lightly_benchmark.py --epochs 5 --eval-epochs 10 --out simclr.ckpt

The workflow of lightly's ``benchmarks/`` scripts, on the embedded ``mnist5k``
digits: SimCLR (lightly's loss, projection head and transform) on a torchvision
ResNet-18 kept as ``self.backbone`` with ``fc = Identity``, then lightly's
``KNNClassifier`` and ``LinearClassifier`` next to this package's
``GradfeatClassifier``, each fitted by a Lightning ``Trainer``. ``--out`` saves the
pretrained module as a Lightning checkpoint, which ``benchmarks/eval.py
--model torchvision:resnet18 --weights OUT --input-size SIZE`` scores from the
command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils.benchmarking import KNNClassifier, LinearClassifier
from pytorch_lightning import LightningModule, Trainer, seed_everything
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.models import resnet18

from gradfeat_plugin import GradfeatClassifier, get_cfg, get_dataset
from gradfeat_plugin.cli import ArgumentParser, main_guard, show_progress
from gradfeat_plugin.zoo.recipes.simclr import MultiViewDataset, digit_simclr_transform


class SimCLR(LightningModule):
    """SimCLR as in lightly's examples: ``forward`` returns the backbone's features."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.save_hyperparameters(args)
        self.backbone = resnet18()
        self.backbone.fc = nn.Identity()
        self.projection_head = SimCLRProjectionHead(512, 512, 128)
        self.criterion = NTXentLoss(temperature=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(start_dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (view0, view1), _ = batch
        z0, z1 = self.projection_head(self(torch.cat([view0, view1]))).chunk(2)
        loss = self.criterion(z0, z1)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _subset(dataset: Dataset, size: int) -> Dataset:
    """``size`` evenly spaced items (the embedded splits are sorted by class)."""
    if not size or size >= len(dataset):
        return dataset
    return Subset(dataset, [i * len(dataset) // size for i in range(size)])


def _trainer(args: argparse.Namespace, epochs: int) -> Trainer:
    return Trainer(max_epochs=epochs, accelerator=args.accelerator, devices=1,
                   logger=False, enable_checkpointing=False,
                   enable_progress_bar=show_progress(args.no_progress),
                   enable_model_summary=False)


def pretrain(args: argparse.Namespace) -> SimCLR:
    """SimCLR on the train split's raw images with lightly's (digit-adapted) transform."""
    seed_everything(args.seed)
    size = (3, args.input_size, args.input_size)
    raw = get_dataset(args.dataset, input_size=size, mean=(0.0,) * 3, std=(1.0,) * 3)
    pretrained_cfg = {"input_size": size, "mean": IMAGENET_DEFAULT_MEAN,
                      "std": IMAGENET_DEFAULT_STD}
    views = MultiViewDataset(_subset(raw.train, args.subset),
                             digit_simclr_transform(get_cfg(), pretrained_cfg))
    module = SimCLR(args)
    trainer = _trainer(args, args.epochs)
    trainer.fit(module, DataLoader(views, batch_size=args.batch_size, shuffle=True,
                                   drop_last=True))
    if args.out:
        trainer.save_checkpoint(args.out)
    return module


def evaluate(args: argparse.Namespace, model: nn.Module) -> dict[str, float]:
    """kNN, lightly's linear probe and gradfeat on the frozen backbone."""
    size = (3, args.input_size, args.input_size)
    data = get_dataset(args.dataset, input_size=size, mean=IMAGENET_DEFAULT_MEAN,
                       std=IMAGENET_DEFAULT_STD)
    train = _subset(data.train, args.subset)
    test = _subset(data.test, args.subset // 4 if args.subset else 0)
    model = model.eval()

    def loaders(shuffle: bool = True) -> tuple[DataLoader, DataLoader]:
        return (DataLoader(train, batch_size=args.batch_size, shuffle=shuffle),
                DataLoader(test, batch_size=args.batch_size))

    results = {}
    seed_everything(args.seed)
    knn = KNNClassifier(model, num_classes=data.num_classes, knn_k=20, knn_t=0.1,
                        train_dataloader_idx=0, val_dataloader_idx=1)
    metrics = _trainer(args, 1).validate(knn, dataloaders=list(loaders(shuffle=False)),
                                         verbose=False)
    results["knn"] = float(metrics[1]["val_knn_top1/dataloader_idx_1"])
    seed_everything(args.seed)
    linear = LinearClassifier(model, batch_size_per_device=args.batch_size,
                              feature_dim=512, num_classes=data.num_classes)
    trainer = _trainer(args, args.eval_epochs)
    trainer.fit(linear, *loaders())
    results["linear (lightly)"] = float(trainer.callback_metrics["val_top1"])
    seed_everything(args.seed)
    gradfeat = GradfeatClassifier(model, batch_size_per_device=args.batch_size,
                                  feature_dim=512, num_classes=data.num_classes)
    trainer = _trainer(args, args.eval_epochs)
    trainer.fit(gradfeat, *loaders())
    results["gradfeat"] = float(trainer.callback_metrics["val_top1"])
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5, help="SimCLR pretraining epochs")
    p.add_argument("--eval-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="SimCLR's Adam learning rate")
    p.add_argument("--subset", type=int, default=0,
                   help="use N evenly spaced training images (N/4 test images); 0: all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--out", help="save the pretrained SimCLR module here (.ckpt)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Pretrain, evaluate, print the table; the values by protocol (fractions)."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    start = time.perf_counter()
    simclr = pretrain(args)
    results = evaluate(args, simclr)
    print(f"\nSimCLR, torchvision ResNet-18, {args.epochs} epochs on {args.dataset} "
          f"at {args.input_size} px ({time.perf_counter() - start:.0f} s)")
    print("| protocol | val_top1 (%) |\n| :--- | ---: |")
    for name, value in results.items():
        print(f"| {name} | {100 * value:.2f} |")
    return results


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
