"""Constructor keywords (``--model-kwargs``) and checkpoints saved from a model built
with other ones: the mismatched tensors are named and the keywords suggested."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradfeat_plugin.backbones import create_backbone
from gradfeat_plugin.errors import GradfeatError

VIT = "timm:vit_tiny_patch16_224"


def _save(model: torch.nn.Module, path: Path, prefix: str = "") -> str:
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return str(path)


def test_a_vit_built_for_32_pixels_loads_its_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone(VIT, weights="random", img_size=32, patch_size=8)
    path = _save(source.model, tmp_path / "vit32.ckpt", "backbone.")
    loaded = create_backbone(VIT, weights=path, img_size=32, patch_size=8)
    assert loaded.input_size == (3, 32, 32) and loaded.weights_key == "backbone"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), source.model(x), rtol=0, atol=0)


def test_without_the_keywords_the_error_names_pos_embed_and_suggests_them(
    tmp_path: Path,
) -> None:
    source = create_backbone(VIT, weights="random", img_size=32, patch_size=8)
    path = _save(source.model, tmp_path / "vit32.ckpt")
    # 17 position tokens = 1 class token + a 4x4 grid of 8-pixel patches: 32 pixels.
    with pytest.raises(GradfeatError) as info:
        create_backbone(VIT, weights=path)
    message = str(info.value)
    assert "\n" not in message
    assert ("pos_embed has shape (1, 17, 192) in the checkpoint, (1, 197, 192) in "
            "the model") in message
    assert "patch_embed.proj.weight has shape (192, 3, 8, 8)" in message
    assert message.endswith("pass --model-kwargs img_size=32 patch_size=8")
    # Only the image size differs (patch 16 kept): 1 + 2x2 tokens means 32 pixels.
    small = create_backbone(VIT, weights="random", img_size=32)
    path = _save(small.model, tmp_path / "vit32p16.ckpt")
    with pytest.raises(GradfeatError, match=r"first: pos_embed has shape \(1, 5, 192\)"
                       r".*--model-kwargs img_size=32 patch_size=16$"):
        create_backbone(VIT, weights=path)


def test_a_grayscale_first_layer_suggests_in_chans(tmp_path: Path) -> None:
    gray = create_backbone("timm:resnet10t", weights="random", in_chans=1)
    path = _save(gray.model, tmp_path / "gray.pth")
    with pytest.raises(GradfeatError, match=r"1 tensor\(s\) differ in shape, first: "
                       r"conv1.0.weight has shape \(24, 1, 3, 3\) in the checkpoint, "
                       r"\(24, 3, 3, 3\) in the model; .*--model-kwargs in_chans=1 and "
                       r"--input-size 1,"):
        create_backbone("timm:resnet10t", weights=path)
    loaded = create_backbone("timm:resnet10t", weights=path, in_chans=1)
    assert loaded.input_size[0] == 1


def test_other_shape_mismatches_name_the_first_three_and_suggest_nothing(
    tmp_path: Path,
) -> None:
    wide = create_backbone("bigan_encoder", weights="random", width=8)
    path = _save(wide.model, tmp_path / "wide.pth")
    with pytest.raises(GradfeatError) as info:
        create_backbone("bigan_encoder", weights=path, width=4)
    message = str(info.value)
    assert message.count(" in the checkpoint, ") == 3
    assert "tensor(s) differ in shape" in message and "more)" in message
    assert message.endswith("check the --model spec and --model-kwargs")


@pytest.mark.parametrize("spec", ["timm:resnet10t", "torchvision:resnet18",
                                  "zoo:rotation_mnist5k", "bigan_encoder"])
def test_a_keyword_the_constructor_does_not_take_is_a_user_error(spec: str) -> None:
    with pytest.raises(GradfeatError, match=rf"backbone {spec} cannot be built with "
                       r"--model-kwargs no_such_kwarg=1 \(.*no_such_kwarg"):
        create_backbone(spec, weights="random", no_such_kwarg=1)
