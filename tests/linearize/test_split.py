"""θ2 resolution, and running θ2 from cached θ1 outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradfeat_plugin import default_split, linearize, resolve_split

from .models import build


@pytest.mark.parametrize(
    "name,expected",
    [
        ("timm_resnet18", ["layer4.1"]),
        ("torchvision_resnet18", ["layer4.1"]),
        ("timm_convnext_atto", ["stages.3.blocks.1"]),
        ("timm_vit_tiny", ["blocks.1"]),
        ("bigan_encoder", ["conv4"]),
    ],
)
def test_default_split(name, expected):
    assert default_split(build(name)) == expected


def test_generic_default_is_last_child_with_parameters():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten())
    assert default_split(model) == ["2"]


def test_unknown_split_lists_nearest_names():
    with pytest.raises(ValueError, match="layer4.1") as info:
        resolve_split(build("timm_resnet18"), "layer4.2")
    assert "nearest valid names" in str(info.value)


def test_overlapping_split_is_rejected():
    with pytest.raises(ValueError, match="overlap"):
        resolve_split(build("timm_resnet18"), ["layer4", "layer4.1"])


@pytest.mark.parametrize("split", [["layer4"], ["layer3.1", "layer4.1"]])
def test_cached_prefix_equals_full_forward(split):
    model = build("torchvision_resnet18")
    lin = linearize(model, split=split)
    with torch.no_grad():
        for _, t in lin.named_tangents():
            t.normal_()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    cached = lin.forward_prefix(x)
    assert all(not b.requires_grad for b in cached)
    f1, j1 = lin.features_from_prefix(cached)
    f2, j2 = lin.features(x)
    assert torch.equal(f1, f2) and torch.equal(j1, j2)
    assert torch.allclose(f1, model(x), atol=1e-10)


def test_prefix_skips_theta1_work():
    lin = linearize(build("torchvision_resnet18"), split="layer4.1")
    suffix_params = {n for n, _ in lin.suffix.named_parameters()}
    assert suffix_params and all(n.startswith("layer4.1.") for n in suffix_params)
    assert not any(n.startswith("layer4.1.") for n, _ in lin.prefix.named_parameters())


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3)
        self.top = nn.Conv2d(8, 8, 3)

    def forward(self, x):
        if x.sum() > float("inf"):  # data-dependent control flow defeats torch.fx
            x = -x
        return self.top(torch.relu(self.body(x))).mean((2, 3))


def test_untraceable_model_falls_back_to_full_forward():
    model = Untraceable().double()
    with pytest.warns(UserWarning, match="cannot trace"):
        lin = linearize(model)
    assert not lin.traced and lin.split == ["top"]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(lin.features(x)[0], model(x))


@pytest.mark.parametrize("part", ["theta1", "theta2"])
def test_reinitialize_touches_only_its_part(part):
    from gradfeat_plugin.linearize import reinitialize

    model = build("torchvision_resnet18")
    fresh = reinitialize(model, ["layer4.1"], part, seed=3)
    old = dict(model.named_parameters())
    for name, p in fresh.named_parameters():
        in_theta2 = name.startswith("layer4.1.")
        changed = not torch.equal(p, old[name])
        if in_theta2 == (part == "theta2") and not name.endswith("bias"):
            assert changed, name
        elif in_theta2 != (part == "theta2"):
            assert not changed, name
    again = reinitialize(model, ["layer4.1"], part, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters()))
