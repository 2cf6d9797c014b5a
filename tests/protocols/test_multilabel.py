"""Multi-label tasks: binary cross-entropy and torchmetrics' mAP."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Trainer
from torch.nn import functional as F
from torch.utils.data import DataLoader

from gradfeat_plugin.protocols import CachedInputs, run_protocols

from .conftest import build, make_cfg, make_splits


def test_map_on_a_hand_checked_example(backbone, cfg):
    # Label 0: ranked 1, 0, 1, 0 -> AP = (1/1 + 2/3) / 2 = 5/6.
    # Label 1: ranked 0, 0, 1, 1 -> AP = (1/3 + 2/4) / 2 = 5/12.  mAP = 15/24.
    scores = torch.tensor([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.4]])
    targets = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 1]], dtype=torch.float32)
    probe = build("linear", backbone.model, 2, cfg, task="multilabel", cached=True)
    # Cached "features" that are the scores themselves, read by an identity head.
    probe.classification_head = torch.nn.Linear(2, 2)
    probe.model.standardize = torch.nn.Identity()
    with torch.no_grad():
        probe.classification_head.weight.copy_(torch.eye(2))
        probe.classification_head.bias.zero_()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (metrics,) = trainer.validate(
        probe, DataLoader(CachedInputs(scores, targets), batch_size=3), verbose=False
    )
    assert metrics["val_map"] == pytest.approx(15 / 24, abs=1e-6)
    bce = F.binary_cross_entropy_with_logits(scores, targets, reduction="none").mean(1)
    assert metrics["val_loss"] == pytest.approx(bce.mean().item(), abs=1e-6)
    assert probe.metric_name == "val_map"


def test_multilabel_protocols_beat_chance(backbone):
    data = make_splits("multilabel")
    cfg = make_cfg(epochs=6)
    results = run_protocols(["gradfeat", "knn"], backbone, data, cfg, progress=False)
    # Chance mAP is the mean label frequency, about 0.17 here.
    assert [(r.protocol, r.metric) for r in results] == [
        ("gradfeat", "val_map"),
        ("knn", "val_knn_map"),
    ]
    assert all(r.value > 0.6 for r in results), results
