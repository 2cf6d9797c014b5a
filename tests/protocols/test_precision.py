"""Protocols train under Lightning's ``bf16-mixed`` precision on the CPU."""

from __future__ import annotations

import pytest

from gradfeat_plugin.protocols import run_protocols

from .conftest import make_cfg


def test_bf16_mixed_training_agrees_with_float32(backbone, digits):
    names = ["linear", "grad", "gradfeat"]
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        cfg = make_cfg(epochs=1)
        cfg.TRAINER.PRECISION = precision
        results[precision] = run_protocols(names, backbone, digits, cfg, progress=False)
    for full, mixed in zip(results["32-true"], results["bf16-mixed"]):
        assert mixed.status == "ok", mixed.reason
        assert mixed.extra["val_loss"] == pytest.approx(full.extra["val_loss"], rel=0.05)
        assert mixed.value == pytest.approx(full.value, abs=0.03)
    # bf16 really ran: rounding moved the losses.
    assert any(
        full.extra["val_loss"] != mixed.extra["val_loss"]
        for full, mixed in zip(results["32-true"], results["bf16-mixed"])
    )
    # The shared pass of grad and gradfeat ran under autocast too.
    assert results["bf16-mixed"][1].extra["trained_with"] == ["gradfeat"]
