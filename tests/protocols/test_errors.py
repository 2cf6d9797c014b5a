"""Registry behaviour and user errors: unknown names, duplicates, NaN losses."""

from __future__ import annotations

import pytest
import torch
from lightly.utils.benchmarking import LinearClassifier
from torch import nn
from torch.utils.data import TensorDataset

from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.protocols import (
    FinetuneClassifier,
    LinearProbeClassifier,
    _registry,
    create_protocol,
    get_protocol_class,
    list_protocols,
    register_protocol,
    run_protocols,
)

from .conftest import Splits, build


def test_builtins_come_from_entry_points():
    assert list_protocols() == ["finetune", "grad", "gradfeat", "knn", "linear"]
    assert get_protocol_class("linear") is LinearProbeClassifier


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(GradfeatError, match="unknown protocol 'lin'.*finetune, grad"):
        create_protocol("lin")


def test_register_once(monkeypatch, backbone, cfg):
    list_protocols()
    monkeypatch.setattr(_registry, "_registry", dict(_registry._registry))
    with pytest.raises(GradfeatError, match="already registered"):
        register_protocol("linear", LinearProbeClassifier)

    class WiderProbe(LinearProbeClassifier):
        pass

    register_protocol("wider", WiderProbe)
    assert "wider" in list_protocols()
    probe = create_protocol("wider", model=backbone.model, num_classes=3)
    assert isinstance(probe, WiderProbe)
    assert probe(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


class MLPProbe(LinearClassifier):
    """A plugin protocol written to the plain signature: lightly's LinearClassifier
    with a hidden layer."""

    def __init__(self, model, batch_size_per_device, lr=0.1, feature_dim=2048,
                 num_classes=1000, topk=(1, 5), hidden=32):
        super().__init__(model, batch_size_per_device, lr, feature_dim, num_classes, topk)
        self.classification_head = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )


def test_a_plugin_protocol_with_plain_arguments_runs(monkeypatch, backbone, digits, cfg):
    list_protocols()
    monkeypatch.setattr(_registry, "_registry", dict(_registry._registry))
    register_protocol("mlp", MLPProbe)
    cfg.TRAIN.LR = 0.5
    mlp, linear = run_protocols(["mlp", "linear"], backbone, digits, cfg, progress=False)
    assert (mlp.protocol, mlp.status, mlp.metric) == ("mlp", "ok", "val_top1")
    assert mlp.value > 0.5  # chance is 0.1
    assert mlp.trainable_params == (backbone.num_features + 1) * 32 + 33 * 10


def test_a_protocol_written_to_the_old_config_signature_is_refused(monkeypatch):
    list_protocols()
    monkeypatch.setattr(_registry, "_registry", dict(_registry._registry))

    class OldStyle(LinearProbeClassifier):
        def __init__(self, model, num_classes, cfg, task="multiclass", cached=False):
            super().__init__(model, num_classes=num_classes, task=task, cached=cached)

    register_protocol("old", OldStyle)
    with pytest.raises(GradfeatError, match=r"takes a config \(cfg\).*plain arguments"):
        get_protocol_class("old")


def test_nan_input_fails_the_protocol_and_its_dependants(backbone, digits, cfg):
    images, labels = digits.train.tensors
    images = images.clone()
    images[5] = float("nan")
    train = TensorDataset(images, labels)
    poisoned = Splits("nan", train, digits.test, 10, "multiclass")
    linear, gradfeat = run_protocols(
        ["linear", "gradfeat"], backbone, poisoned, cfg, progress=False
    )
    # One NaN image makes the feature statistics, hence every logit, NaN: the
    # protocol fails on its inputs before any update, not as a divergence.
    assert (linear.status, linear.value, linear.metric) == ("failed", None, "val_top1")
    assert "640 of 640 logits" in linear.reason and "non-finite" in linear.reason
    assert (gradfeat.status, gradfeat.value) == ("failed", None)
    assert gradfeat.reason.startswith("needs the linear probe, which failed")


def test_finetune_reports_the_best_optimiser_that_did_not_diverge(backbone, digits, cfg):
    cfg.FINETUNE.OPTIMIZERS = ["sgd", "adam"]
    cfg.SGD.WEIGHT_DECAY = 1e30  # blows SGD's weights up after one step
    (finetune,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert finetune.status == "ok" and finetune.extra["optimizer"] == "adam"
    assert finetune.value > 0.5
    assert finetune.extra["values_by_optimizer"] == {"adam": finetune.value}
    assert "loss is nan" in finetune.extra["failures"]["sgd, lr 0.001"]
    cfg.FINETUNE.OPTIMIZERS = ["sgd"]
    (finetune,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert (finetune.status, finetune.value) == ("diverged", None)
    assert finetune.reason.startswith("sgd, lr 0.001: training loss is")


def test_finetune_clips_the_gradient_norm(monkeypatch, backbone, cfg):
    clipped = []
    monkeypatch.setattr(
        FinetuneClassifier, "clip_gradients",
        lambda self, optimizer, gradient_clip_val, gradient_clip_algorithm:
            clipped.append((gradient_clip_val, gradient_clip_algorithm)),
    )
    module = build("finetune", backbone.model, 10, cfg)
    module.configure_gradient_clipping(None)
    assert clipped == [(10.0, "norm")]


def test_bad_names_fail_before_training(backbone, digits, cfg):
    with pytest.raises(GradfeatError, match="unknown protocol 'svm'"):
        run_protocols(["linear", "svm"], backbone, digits, cfg, progress=False)
    cfg.MODEL.SPLIT = ["conv9"]
    with pytest.raises(GradfeatError, match="bad θ2 split"):
        run_protocols(["linear"], backbone, digits, cfg, progress=False)
    bad_task = Splits("x", digits.train, digits.test, 10, "regression")
    with pytest.raises(GradfeatError, match="unknown task"):
        run_protocols(["linear"], backbone, bad_task, cfg, progress=False)
