"""Entry-point backbones and sources from real throwaway distributions; the registry."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gradfeat_plugin.backbones import (
    BACKBONE_GROUP,
    SOURCE_GROUP,
    create_backbone,
    list_backbones,
    register_backbone,
)
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.errors import GradfeatError

TOY_MODULE = """
import torch
from torch import nn

class Toy(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.stem = nn.Linear(12, 8)
        self.top = nn.Linear(8, width)
        self.pretrained_cfg = {
            "input_size": (3, 2, 2), "mean": (0.1,) * 3, "std": (0.2,) * 3
        }

    def forward(self, x):
        return self.top(torch.relu(self.stem(x.flatten(1))))

def toy(pretrained=True, **kw):
    model = Toy(**kw)
    if pretrained:
        torch.nn.init.constant_(model.top.weight, 0.5)
    return model

toy.gradfeat_split = "top"
"""

BROKEN_MODULE = "import a_module_that_does_not_exist\n"
RESNET18_SPECS = ["timm:resnet18", "torchvision:resnet18"]


def test_entry_point_backbone_from_installed_distribution(install_distribution) -> None:
    install_distribution("toy-backbones", "toy_backbones", TOY_MODULE,
                         {BACKBONE_GROUP: {"toy": "toy_backbones:toy"}})
    bb = create_backbone("toy", width=5)
    assert (bb.num_features, bb.split, bb.input_size) == (5, ["top"], (3, 2, 2))
    assert (bb.mean, bb.std) == ((0.1,) * 3, (0.2,) * 3)
    assert torch.equal(bb.model.top.weight, torch.full((5, 8), 0.5))
    assert bb.model(torch.randn(4, 3, 2, 2)).shape == (4, 5)
    assert not torch.equal(create_backbone("toy", "random").model.top.weight,
                           torch.full((6, 8), 0.5))
    assert list_backbones("toy*") == ["toy"]


def test_broken_plugin_is_named_and_others_keep_working(install_distribution) -> None:
    install_distribution("broken-plugin", "broken_plugin", BROKEN_MODULE,
                         {BACKBONE_GROUP: {"broken": "broken_plugin:factory"}})
    install_distribution("toy-backbones", "toy_backbones", TOY_MODULE,
                         {BACKBONE_GROUP: {"toy": "toy_backbones:toy"}})
    with pytest.raises(
        GradfeatError,
        match=r"plugin broken-plugin failed to load backbone 'broken'.*ModuleNotFound",
    ):
        create_backbone("broken")
    assert create_backbone("toy").num_features == 6
    assert {"broken", "toy", "bigan_encoder"} <= set(list_backbones())


def test_duplicate_entry_point_name_is_an_error(install_distribution) -> None:
    install_distribution("toy-a", "toy_a", TOY_MODULE,
                         {BACKBONE_GROUP: {"toy": "toy_a:toy"}})
    install_distribution("toy-b", "toy_b", TOY_MODULE,
                         {BACKBONE_GROUP: {"toy": "toy_b:toy"}})
    with pytest.raises(GradfeatError, match=r"'toy' is registered more than once"):
        create_backbone("toy")


def test_register_backbone_and_duplicates() -> None:
    register_backbone("tiny_bigan", lambda pretrained=True, **kw: BiGANEncoder(width=2))
    bb = create_backbone("tiny_bigan", weights="random")
    assert (bb.num_features, bb.split) == (16, ["conv4"])
    with pytest.raises(GradfeatError, match="'tiny_bigan' is already registered"):
        register_backbone("tiny_bigan", BiGANEncoder)
    with pytest.raises(GradfeatError, match="'bigan_encoder' is already registered"):
        register_backbone("bigan_encoder", BiGANEncoder)
    with pytest.raises(GradfeatError, match="without ':'"):
        register_backbone("timm:mine", BiGANEncoder)


def test_factory_must_return_pooled_features() -> None:
    register_backbone("unpooled", lambda pretrained=True: nn.Conv2d(3, 4, 3))
    with pytest.raises(GradfeatError, match=r"must return pooled \(B, d\) features"):
        create_backbone("unpooled", weights="random")


TOY_SOURCE_MODULE = """
from torch import nn
from gradfeat_plugin.backbones import BackboneSource

class ToySource(BackboneSource):
    def list_models(self):
        return ["lin4", "lin8"]

    def create_model(self, name, pretrained, **kwargs):
        return _Flat(int(name[3:]))

class _Flat(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(3, d)
        self.pretrained_cfg = {"input_size": (3, 1, 1)}

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def test_source_entry_points(install_distribution) -> None:
    install_distribution("toy-source", "toy_source", TOY_SOURCE_MODULE,
                         {SOURCE_GROUP: {"toy": "toy_source:ToySource"}})
    assert create_backbone("toy:lin8", weights="random").num_features == 8
    assert list_backbones("toy:*") == ["toy:lin4", "toy:lin8"]
    assert list_backbones("*:lin4") == ["toy:lin4"]


def test_builtin_source_registered_again_by_setup_py_is_not_a_duplicate(
    install_distribution,
) -> None:
    install_distribution("own-sources", "own_sources", "",
                         {SOURCE_GROUP: {
                             "timm": "gradfeat_plugin.backbones.sources:TimmSource"}})
    assert create_backbone("timm:resnet10t", weights="random").num_features == 512


def test_foreign_source_taking_a_builtin_prefix_is_an_error(
    install_distribution,
) -> None:
    install_distribution("toy-source", "toy_source", TOY_SOURCE_MODULE,
                         {SOURCE_GROUP: {"timm": "toy_source:ToySource"}})
    expected = "'timm' is built in and also registered by toy-source"
    with pytest.raises(GradfeatError, match=expected):
        create_backbone("timm:resnet18", weights="random")


def test_broken_source_is_skipped_when_listing(install_distribution) -> None:
    install_distribution("broken-source", "broken_source", BROKEN_MODULE,
                         {SOURCE_GROUP: {"bad": "broken_source:Source"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list_backbones("t*:resnet18") == RESNET18_SPECS
    assert caught == []  # the pattern's source part excludes "bad" before loading it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list_backbones("*:resnet18") == RESNET18_SPECS
    assert any("skipping backbone source 'bad'" in str(w.message) for w in caught)
    with pytest.raises(GradfeatError, match="plugin broken-source failed to load"):
        create_backbone("bad:x")


def test_list_backbones_wildcards() -> None:
    assert list_backbones("torchvision:resnet1*") == [
        "torchvision:resnet101", "torchvision:resnet152", "torchvision:resnet18"]
    assert list_backbones("timm:convnext_at*") == ["timm:convnext_atto",
                                                   "timm:convnext_atto_ols",
                                                   "timm:convnext_atto_rms"]
    assert list_backbones("bigan_encoder") == ["bigan_encoder"]
    everything = list_backbones()
    assert len(everything) > 1000
    assert everything == sorted(everything)
    assert {p.split(":")[0] for p in everything if ":" in p} >= {"timm", "torchvision"}
    assert list_backbones("no_such_*") == []
