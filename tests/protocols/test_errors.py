"""Registry behaviour and user errors: unknown names, duplicates, NaN losses."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.protocols import (
    FinetuneProtocol,
    LinearProtocol,
    _registry,
    create_protocol,
    get_protocol_class,
    list_protocols,
    register_protocol,
    run_protocols,
)

from .conftest import Splits


def test_builtins_come_from_entry_points():
    assert list_protocols() == ["finetune", "grad", "gradfeat", "knn", "linear"]
    assert get_protocol_class("linear") is LinearProtocol


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(GradfeatError, match="unknown protocol 'lin'.*finetune, grad"):
        create_protocol("lin")


def test_register_once(monkeypatch, backbone, cfg):
    list_protocols()
    monkeypatch.setattr(_registry, "_registry", dict(_registry._registry))
    with pytest.raises(GradfeatError, match="already registered"):
        register_protocol("linear", LinearProtocol)

    class WiderProbe(LinearProtocol):
        pass

    register_protocol("wider", WiderProbe)
    assert "wider" in list_protocols()
    probe = create_protocol("wider", model=backbone.model, num_classes=3, cfg=cfg)
    assert isinstance(probe, WiderProbe)
    assert probe(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


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
    assert "loss is nan" in finetune.extra["failures"]["sgd"]
    cfg.FINETUNE.OPTIMIZERS = ["sgd"]
    (finetune,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert (finetune.status, finetune.value) == ("diverged", None)
    assert finetune.reason.startswith("sgd: training loss is")


def test_finetune_clips_the_gradient_norm(monkeypatch, backbone, cfg):
    clipped = []
    monkeypatch.setattr(
        FinetuneProtocol, "clip_gradients",
        lambda self, optimizer, gradient_clip_val, gradient_clip_algorithm:
            clipped.append((gradient_clip_val, gradient_clip_algorithm)),
    )
    module = FinetuneProtocol(backbone.model, num_classes=10, cfg=cfg)
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
