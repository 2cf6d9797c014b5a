"""bigan_ali is the paper's (ALI's) BiGAN encoder layer by layer; its JVPs are exact."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import setuptools
import torch
from torch import nn

from gradfeat_plugin import create_backbone, linearize
from gradfeat_plugin.backbones import BACKBONE_GROUP
from gradfeat_plugin.backbones.bigan import BiGANALIEncoder, bigan_ali
from gradfeat_plugin.coverage import EXACT_TOLERANCE, finite_difference_error
from gradfeat_plugin.linearize import ENGINES
from tests.conftest import randomize_batchnorm

ROOT = Path(__file__).resolve().parents[2]

# (in, out, kernel, stride, output side) of conv1-conv5 for a 32×32 RGB image.
PAPER_LAYERS = [
    (3, 32, 5, 1, 28),
    (32, 64, 4, 2, 13),
    (64, 128, 4, 1, 10),
    (128, 256, 4, 2, 4),
    (256, 512, 4, 1, 1),
]
TABLE1_SPLITS = [["conv5"], ["conv4", "conv5"], ["conv3", "conv4", "conv5"]]


def output_sides(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(channels, H, W)`` after each of conv1-conv5."""
    sides: list[tuple[int, int, int]] = []
    hooks = [
        getattr(model, f"conv{i}").register_forward_hook(
            lambda _m, _i, out: sides.append(tuple(out.shape[1:]))
        )
        for i in range(1, 6)
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return sides


def test_layers_are_the_papers():
    model = BiGANALIEncoder().eval()
    for i, (cin, cout, kernel, stride, _) in enumerate(PAPER_LAYERS, start=1):
        conv, norm, act = getattr(model, f"conv{i}")
        assert isinstance(conv, nn.Conv2d) and conv.bias is None
        assert (conv.in_channels, conv.out_channels) == (cin, cout)
        assert (conv.kernel_size, conv.stride, conv.padding) == (
            (kernel, kernel), (stride, stride), (0, 0)
        )
        assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == cout
        assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01
    assert [name for name, _ in model.named_children()] == [
        "conv1", "conv2", "conv3", "conv4", "conv5"
    ]
    x = torch.randn(2, 3, 32, 32)
    assert output_sides(model, x) == [(c, s, s) for _, c, _, _, s in PAPER_LAYERS]
    features = model(x)
    assert features.shape == (2, 512) == (2, model.num_features)
    assert torch.equal(features, model.forward_features(x).flatten(1))
    assert model.gradfeat_split == "conv5"
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert BiGANALIEncoder(in_chans=1).pretrained_cfg["input_size"] == (1, 32, 32)


def test_leaky_slope_of_the_wasserstein_variant():
    model = BiGANALIEncoder(leaky_slope=0.2).eval()
    slopes = [m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2] * 5 and model.leaky_slope == 0.2
    block = model.conv5
    x = torch.randn(4, 256, 4, 4)
    pre = block[1](block[0](x))
    assert torch.allclose(block(x), torch.where(pre > 0, pre, 0.2 * pre))
    assert (pre < 0).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"leaky_slope": -0.1}, "leaky_slope"),
        ({"leaky_slope": 1.0}, "leaky_slope"),
        ({"leaky_slope": "0.2"}, "leaky_slope"),
        ({"in_chans": 0}, "in_chans"),
        ({"in_chans": 3.0}, "in_chans"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiGANALIEncoder(**kwargs)


def test_no_published_weights():
    with pytest.raises(ValueError, match="no published weights.*--arch bigan_ali"):
        bigan_ali(pretrained=True)


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("split", TABLE1_SPLITS, ids="-".join)
def test_table1_splits_are_exact(split, engine):
    torch.manual_seed(0)
    model = randomize_batchnorm(BiGANALIEncoder().eval())
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert finite_difference_error(model, split, x, engine) < EXACT_TOLERANCE
    # θ2 is exactly the split's convolutions (BatchNorm folded into their biases).
    lin = linearize(model, split, engine=engine)
    assert [name for name, _ in lin.named_tangents()] == [
        f"{block}.0.{p}" for block in split for p in ("weight", "bias")
    ]
    # θ1's output is cacheable: the input map of the split's first conv.
    first = int(split[0][-1])
    _, cin, _, _, side = PAPER_LAYERS[first - 2]
    (cached,) = lin.forward_prefix(x.float())
    assert cached.shape == (3, cin, side, side)


def test_setup_registers_the_entry_point(install_distribution, monkeypatch):
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    runpy.run_path(str(ROOT / "setup.py"))
    entries = dict(
        line.replace(" ", "").split("=")
        for line in captured["entry_points"][BACKBONE_GROUP]
    )
    assert entries["bigan_ali"] == "gradfeat_plugin.backbones.bigan:bigan_ali"
    # The same entry point as an installed distribution (the venv may predate it).
    entry_points = {BACKBONE_GROUP: {"bigan_ali": entries["bigan_ali"]}}
    install_distribution("ali-check", "ali_check", "", entry_points)
    bb = create_backbone("bigan_ali", weights="random", leaky_slope=0.2)
    assert (bb.num_features, bb.split, tuple(bb.input_size)) == (
        512, ["conv5"], (3, 32, 32)
    )
    assert bb.model.conv5[2].negative_slope == 0.2
