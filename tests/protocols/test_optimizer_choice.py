"""Fine-tuning reports the better of its optimisers (Adam and SGD, as the paper)."""

from __future__ import annotations

from gradfeat_plugin.protocols import run_protocols

from .conftest import make_cfg


def test_finetune_reports_the_better_optimiser(backbone, digits):
    cfg = make_cfg(epochs=1)
    cfg.FINETUNE.OPTIMIZERS = ["adam", "sgd"]
    (result,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    values = result.extra["values_by_optimizer"]
    assert set(values) == {"adam", "sgd"}  # both finished
    assert values["adam"] != values["sgd"]
    best = max(values, key=values.__getitem__)
    assert result.extra["optimizer"] == best
    assert result.value == values[best] == max(values.values())
    assert result.value > 0.5
