"""Every protocol beats chance (10 %) by a wide margin on real digits."""

from __future__ import annotations

import pytest

from gradfeat_plugin.protocols import run_protocols

from .conftest import make_cfg


@pytest.fixture(scope="module")
def results(backbone, digits):
    cfg = make_cfg(epochs=6)
    results = run_protocols(["all"], backbone, digits, cfg, progress=False)
    return {r.protocol: r for r in results}


def test_all_runs_every_protocol_in_order(results):
    assert list(results) == ["linear", "grad", "gradfeat", "finetune", "knn"]


@pytest.mark.parametrize("protocol", ["linear", "grad", "gradfeat", "finetune", "knn"])
def test_beats_chance(results, protocol):
    assert results[protocol].value > 0.6


def test_gradfeat_improves_on_its_probe(results):
    assert results["gradfeat"].value > results["linear"].value


def test_result_records(results, backbone):
    d = backbone.num_features
    assert results["linear"].trainable_params == d * 10 + 10
    theta2 = sum(p.numel() for p in backbone.model.conv4.parameters())
    # BN folding turns conv4's BatchNorm (2 x 64 parameters) into a conv bias (64).
    assert results["grad"].trainable_params == theta2 - 64 + 10
    assert results["gradfeat"].trainable_params == theta2 - 64 + d * 10 + 10
    assert results["finetune"].trainable_params == theta2 + d * 10 + 10
    assert results["knn"].trainable_params == 0
    assert {r.metric for r in results.values()} == {"val_top1", "val_knn_top1"}
    assert results["knn"].epochs == 0 and results["linear"].epochs == 6
    for r in results.values():
        assert r.seed == 0 and r.wall_time_s > 0 and r.peak_memory_bytes > 0
        assert r.extra["split"] == ["conv4"] and r.extra["cached"]
    assert results["linear"].extra["val_top5"] >= results["linear"].value
    assert results["finetune"].extra["optimizer"] == "adam"
