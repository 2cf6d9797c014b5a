"""The self-check of ``linearize`` refuses a linearisation whose features differ from
the original model's, even by a little: 1 % in float32, a millionth in float64."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin.linearize import LinearizationError, linearize
from gradfeat_plugin.linearize import backbone as backbone_module

from .models import build


@pytest.mark.parametrize("dtype, change", [(torch.float32, 1e-2), (torch.float64, 1e-6)])
def test_features_that_differ_are_refused(monkeypatch, dtype, change):
    model = build("bigan_encoder").to(dtype)
    real_fold = backbone_module.fold_batchnorm

    def fold_and_drift(model, split):
        # A folding that is off by a relative `change` in one θ2 weight.
        pairs = real_fold(model, split)
        with torch.no_grad():
            model.get_submodule("conv4.0").weight.mul_(1 + change)
        return pairs

    monkeypatch.setattr(backbone_module, "fold_batchnorm", fold_and_drift)
    with pytest.raises(LinearizationError, match="features differ from the original's"):
        linearize(model, "conv4", input_size=(3, 32, 32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_same_model_passes(dtype):
    lin = linearize(build("bigan_encoder").to(dtype), "conv4", input_size=(3, 32, 32))
    assert lin.check.feature_error < {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
