"""timm:, torchvision: and zoo: specs resolve to real backbones with random weights."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from gradfeat_plugin import zoo
from gradfeat_plugin.backbones import create_backbone
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.errors import GradfeatError


@pytest.mark.parametrize(
    "name, num_features, split",
    [("resnet18", 512, ["layer4.1"]), ("convnext_atto", 320, ["stages.3.blocks.1"])],
)
def test_timm_random(name: str, num_features: int, split: list[str]) -> None:
    bb = create_backbone(f"timm:{name}", weights="random")
    cfg = timm.models.get_pretrained_cfg(name)
    assert (bb.spec, bb.weights, bb.num_features, bb.split) == (
        f"timm:{name}", "random", num_features, split
    )
    assert (bb.input_size, bb.mean, bb.std) == (cfg.input_size, cfg.mean, cfg.std)
    assert not bb.model.training
    assert bb.model(torch.randn(2, 3, 64, 64)).shape == (2, num_features)


def test_timm_kwargs_reach_the_model() -> None:
    bb = create_backbone("timm:resnet18", weights="random", in_chans=1)
    assert bb.model.conv1.in_channels == 1
    assert bb.model(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_torchvision_resnet_features_are_the_pooled_trunk() -> None:
    bb = create_backbone("torchvision:resnet18", weights="random")
    assert (bb.num_features, bb.split) == (512, ["layer4.1"])
    assert bb.input_size == (3, 224, 224)
    assert bb.mean == (0.485, 0.456, 0.406) and bb.std == (0.229, 0.224, 0.225)
    reference = torchvision.models.resnet18()
    reference.fc = nn.Identity()
    reference.load_state_dict(bb.model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(bb.model(x), reference.eval()(x), rtol=0, atol=0)


def test_torchvision_conv_classifier_is_removed() -> None:
    bb = create_backbone("torchvision:squeezenet1_1", weights="random")
    assert bb.num_features == 512
    assert isinstance(bb.model.classifier[1], nn.Identity)
    assert bb.model(torch.randn(1, 3, 96, 96)).shape == (1, 512)


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(GradfeatError, match="unknown timm model 'resnet18x'.*resnet18"):
        create_backbone("timm:resnet18x", weights="random")
    with pytest.raises(GradfeatError, match="unknown torchvision model"):
        create_backbone("torchvision:resnet19", weights="random")
    with pytest.raises(GradfeatError, match="did you mean timm:resnet18"):
        create_backbone("resnet18", weights="random")
    with pytest.raises(GradfeatError, match="unknown backbone source 'nope'"):
        create_backbone("nope:resnet18", weights="random")


@pytest.fixture
def fake_zoo(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    calls: list[tuple[str, bool]] = []

    def zoo_model(name: str, pretrained: bool = True) -> nn.Module:
        calls.append((name, pretrained))
        return BiGANEncoder(width=8)

    monkeypatch.setattr(
        zoo, "list_zoo_models", lambda: ["bigan_cifar10"], raising=False
    )
    monkeypatch.setattr(zoo, "zoo_model", zoo_model, raising=False)
    return calls


def test_zoo_entry(fake_zoo: list[tuple[str, bool]]) -> None:
    bb = create_backbone("zoo:bigan_cifar10")
    assert fake_zoo == [("bigan_cifar10", True)]
    assert (bb.num_features, bb.split, bb.input_size) == (64, ["conv4"], (3, 32, 32))
    assert (bb.mean, bb.std) == ((0.5,) * 3, (0.5,) * 3)
    create_backbone("zoo:bigan_cifar10", weights="random")
    assert fake_zoo[-1] == ("bigan_cifar10", False)
    with pytest.raises(GradfeatError, match="unknown zoo model 'bigan_cifar'"):
        create_backbone("zoo:bigan_cifar")


def test_real_zoo_entry_with_random_weights() -> None:
    if not hasattr(zoo, "list_zoo_models") or not zoo.list_zoo_models():
        pytest.skip("gradfeat_plugin.zoo provides no models yet")
    name = zoo.list_zoo_models()[0]
    bb = create_backbone(f"zoo:{name}", weights="random")
    c, h, w = bb.input_size
    assert bb.model(torch.randn(2, c, h, w)).shape == (2, bb.num_features)


def test_builtin_bigan_entry_point() -> None:
    bb = create_backbone("bigan_encoder", weights="random", width=4)
    assert (bb.num_features, bb.split) == (32, ["conv4"])
    with pytest.raises(GradfeatError, match="--weights random.*--weights PATH"):
        create_backbone("bigan_encoder")
