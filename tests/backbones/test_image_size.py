"""A model built for another image size is fed, probed and linearised at that size."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin import create_backbone, linearize


@pytest.mark.parametrize(
    "spec", ["timm:mixer_s16_224", "timm:levit_128s", "timm:coat_lite_tiny"]
)
def test_img_size_is_the_size_the_model_is_fed(spec):
    backbone = create_backbone(spec, weights="random", img_size=64)
    assert backbone.input_size == (3, 64, 64)
    lin = linearize(backbone.model, backbone.split, num_classes=3)
    assert lin.pretrained_cfg["input_size"] == (3, 64, 64)
    assert lin.check.adjoint_error < 1e-9
    logits = lin(torch.randn(2, 3, 64, 64))
    logits.logsumexp(1).sum().backward()
    assert any(t.grad is not None and bool(t.grad.ne(0).any()) for t in lin.tangents)


def test_a_family_without_img_size_is_only_fed_at_it():
    # TResNet takes no img_size; its first conv follows a space-to-depth step
    # and reads 16 times the input's channels.
    backbone = create_backbone("timm:tresnet_m", weights="random", img_size=64)
    assert backbone.input_size == (3, 64, 64)
    gray = create_backbone("timm:tresnet_m", weights="random", img_size=64, in_chans=1)
    assert gray.input_size == (1, 64, 64)
    assert gray.model(torch.randn(1, *gray.input_size)).shape == (1, gray.num_features)


def test_input_size_still_overrides_img_size():
    backbone = create_backbone(
        "timm:convnext_atto", weights="random", img_size=64, input_size=48
    )
    assert backbone.input_size == (3, 48, 48)
