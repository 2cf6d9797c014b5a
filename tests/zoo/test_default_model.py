"""The default model, zoo:rotation_mnist5k: pretrained on first use within the time
budget, cached, and clearly better than random features under a linear probe."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from gradfeat_plugin.data import dataset_targets, get_dataset
from gradfeat_plugin.zoo import metadata_path, zoo_checkpoint_path, zoo_model

PRETRAIN_BUDGET_S = 120.0


@torch.no_grad()
def _pooled_features(model: torch.nn.Module, dataset) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=500)
    return torch.cat([model(images) for images, _ in loader]).numpy()


def linear_probe_accuracy(model: torch.nn.Module) -> float:
    """Logistic regression on frozen pooled features: mnist5k train -> test."""
    cfg = model.pretrained_cfg
    splits = get_dataset(
        "mnist5k", input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"]
    )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(_pooled_features(model, splits.train), dataset_targets(splits.train))
    return probe.score(
        _pooled_features(model, splits.test), dataset_targets(splits.test)
    )


@pytest.mark.slow
def test_default_model_pretrains_fast_and_beats_random_features(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADFEAT_CACHE", str(tmp_path))
    model = zoo_model("rotation_mnist5k", progress=False)
    path = zoo_checkpoint_path("rotation_mnist5k")
    meta = json.loads(open(metadata_path(path)).read())
    assert meta["recipe"] == "rotation" and meta["dataset"] == "mnist5k"
    assert meta["wall_time_s"] <= PRETRAIN_BUDGET_S
    # Chance level of the 4-way rotation task is ln 4 = 1.39.
    assert meta["final_pretext_loss"] < 0.5 * np.log(4)

    written = os.stat(path).st_mtime_ns
    start = time.perf_counter()
    cached = zoo_model("rotation_mnist5k", progress=False)
    assert time.perf_counter() - start < 5.0 and os.stat(path).st_mtime_ns == written
    assert all(
        torch.equal(v, cached.state_dict()[k]) for k, v in model.state_dict().items()
    )

    torch.manual_seed(0)
    random_model = zoo_model("rotation_mnist5k", pretrained=False).eval()
    pretrained_acc = linear_probe_accuracy(model)
    random_acc = linear_probe_accuracy(random_model)
    print(
        f"linear probe on mnist5k: pretrained {pretrained_acc:.3f}, "
        f"random {random_acc:.3f}, "
        f"pretraining {meta['wall_time_s']:.1f} s"
    )
    assert pretrained_acc >= 0.8
    assert pretrained_acc >= random_acc + 0.08
