"""BatchNorm folding into a convolution that has its own bias: the bias is scaled by
γ/σ like the weight, so the folded model computes the same features."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradfeat_plugin.linearize import fold_batchnorm, linearize

from tests.conftest import randomize_batchnorm


def biased_block_model() -> nn.Module:
    """Two conv-BN-ReLU blocks whose convolutions carry a bias, then pooling."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=True), nn.BatchNorm2d(16), nn.ReLU(),
        ),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).double()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.bias, std=1.0)  # far from zero: its scaling shows
    return randomize_batchnorm(model.eval(), seed=1)


def test_folding_scales_the_convolutions_own_bias():
    model = biased_block_model()
    folded = copy.deepcopy(model)
    pairs = fold_batchnorm(folded, ["1"])
    assert pairs == [("1.0", "1.1"), ("1.3", "1.4")]
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(folded(x), model(x), rtol=1e-12, atol=1e-12)
    norm = model[1][1]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    expected = norm.bias + (model[1][0].bias - norm.running_mean) * scale
    torch.testing.assert_close(folded[1][0].bias, expected, rtol=1e-12, atol=1e-12)


def test_linearising_a_biased_block_keeps_its_features():
    model = biased_block_model()
    lin = linearize(model, "1", fold_bn=True, input_size=(3, 8, 8))
    assert lin.check.feature_error < 1e-12
