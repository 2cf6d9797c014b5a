"""Registry behaviour and user errors: unknown names, duplicates, NaN losses."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from gradfeat_plugin.errors import GradfeatError, ProtocolFailed
from gradfeat_plugin.protocols import (
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


def test_nan_input_fails_the_protocol_without_result(backbone, digits, cfg):
    images, labels = digits.train.tensors
    images = images.clone()
    images[5] = float("nan")
    train = TensorDataset(images, labels)
    poisoned = Splits("nan", train, digits.test, 10, "multiclass")
    # One NaN image makes the feature statistics, hence every logit, NaN: the
    # protocol fails on its inputs before any update, not as a divergence.
    with pytest.raises(ProtocolFailed, match="640 of 640 logits .* are non-finite"):
        run_protocols(["linear"], backbone, poisoned, cfg, progress=False)


def test_bad_names_fail_before_training(backbone, digits, cfg):
    with pytest.raises(GradfeatError, match="unknown protocol 'svm'"):
        run_protocols(["linear", "svm"], backbone, digits, cfg, progress=False)
    cfg.MODEL.SPLIT = ["conv9"]
    with pytest.raises(GradfeatError, match="bad θ2 split"):
        run_protocols(["linear"], backbone, digits, cfg, progress=False)
    bad_task = Splits("x", digits.train, digits.test, 10, "regression")
    with pytest.raises(GradfeatError, match="unknown task"):
        run_protocols(["linear"], backbone, bad_task, cfg, progress=False)
