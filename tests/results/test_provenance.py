from __future__ import annotations

import hashlib
import importlib.metadata

import torch
from torch import nn

from gradfeat_plugin.results import config_hash, count_flops, package_versions


class _ReturnsText(nn.Module):
    """Untraceable: its output is not a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> str:
        return "features"


def test_count_flops_of_conv_and_linear_is_exact():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    model.train()
    flops, params = count_flops(model, (3, 8, 8))
    # One multiply-add is one flop: conv 8*3*9 per pixel * 64 pixels, then 512*10.
    assert flops == 8 * 3 * 9 * 64 + 512 * 10
    assert params == (8 * 3 * 9 + 8) + (512 * 10 + 10)
    assert model.training


def test_count_flops_of_an_untraceable_model_is_zero_with_exact_params():
    assert count_flops(_ReturnsText(), (4,)) == (0, 10)


def test_package_versions_and_config_hash():
    versions = package_versions()
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["gradfeat-plugin"] == importlib.metadata.version("gradfeat-plugin")
    assert {"torchvision", "timm", "lightly", "python"} <= set(versions)
    text = "TRAIN:\n  EPOCHS: 10\n"
    assert config_hash(text) == hashlib.sha256(text.encode()).hexdigest()
    assert config_hash(text) != config_hash(text.replace("10", "11"))
