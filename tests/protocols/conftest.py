"""Real data and a trained tiny network for the protocol tests.

The data are scikit-learn's 8×8 handwritten digits (1,797 real images), upsampled
to 16×16 RGB; the backbone is a width-8 BiGAN encoder trained supervised for one
epoch with a fixed seed, so its features are meaningful but not perfect.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from fvcore.common.config import CfgNode
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.config.protocol_kwargs import protocol_kwargs
from gradfeat_plugin.protocols import get_protocol_class

NUM_TRAIN = 1400
IMG_SIZE = 16


@dataclass
class Splits:
    """Stands in for ``gradfeat_plugin.data.DatasetSplits``."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    task: str
    val: Dataset | None = None


@dataclass
class TinyBackbone:
    """Stands in for ``gradfeat_plugin.backbones.Backbone``."""

    model: nn.Module
    split: list[str]
    num_features: int


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``(N, 3, 16, 16)`` images in [-1, 1] and labels, shuffled."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=IMG_SIZE, mode="bilinear", align_corners=False)
    images = (images.repeat(1, 3, 1, 1) - 0.5) / 0.5
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order], torch.tensor(digits.target)[order]


def make_splits(task: str = "multiclass") -> Splits:
    """Digits as a 10-class task, or as 12 labels (the digit, even, at least 5)."""
    images, labels = digits_tensors()
    if task == "multilabel":
        targets = torch.cat(
            [
                F.one_hot(labels, 10),
                (labels % 2 == 0).long().unsqueeze(1),
                (labels >= 5).long().unsqueeze(1),
            ],
            dim=1,
        )
        num_classes = 12
    else:
        targets, num_classes = labels, 10
    return Splits(
        "digits",
        TensorDataset(images[:NUM_TRAIN], targets[:NUM_TRAIN]),
        TensorDataset(images[NUM_TRAIN:], targets[NUM_TRAIN:]),
        num_classes,
        task,
    )


def train_tiny_backbone(seed: int = 0) -> TinyBackbone:
    """A width-8 BiGAN encoder trained one epoch on the digits' training part."""
    torch.manual_seed(seed)
    images, labels = digits_tensors()
    images, labels = images[:NUM_TRAIN], labels[:NUM_TRAIN]
    encoder = BiGANEncoder(width=8, img_size=IMG_SIZE)
    head = nn.Linear(encoder.num_features, 10)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    for start in range(0, NUM_TRAIN, 50):
        batch = slice(start, start + 50)
        loss = F.cross_entropy(head(encoder(images[batch])), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return TinyBackbone(encoder.eval(), ["conv4"], encoder.num_features)


@pytest.fixture(scope="session")
def digits() -> Splits:
    return make_splits()


@pytest.fixture(scope="session")
def backbone() -> TinyBackbone:
    return train_tiny_backbone()


def make_cfg(epochs: int = 3) -> CfgNode:
    """CPU, one process, only Adam for fine-tuning."""
    cfg = get_cfg()
    cfg.TRAIN.EPOCHS = epochs
    cfg.TRAINER.ACCELERATOR = "cpu"
    cfg.FINETUNE.OPTIMIZERS = ["adam"]
    # FinetuneClassifier's own default start; tests/protocols/test_finetune_start.py
    # covers the run's default, the chosen probe.
    cfg.FINETUNE.HEAD_INIT = "random"
    return cfg


def build(name: str, model: nn.Module, num_classes: int, cfg: CfgNode,
          optimizer: str | None = None, **kwargs):
    """Protocol ``name`` built as ``run_protocols`` builds it from ``cfg``
    (``kwargs`` add to or override the config's keywords)."""
    keywords = {**protocol_kwargs(cfg, name, optimizer), **kwargs}
    return get_protocol_class(name)(model=model, num_classes=num_classes, **keywords)


@pytest.fixture
def cfg() -> CfgNode:
    return make_cfg()


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads and lose much on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
