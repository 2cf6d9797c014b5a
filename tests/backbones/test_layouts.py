"""Checkpoint layouts as users have them: lightly examples, DINO, Lightning, input size."""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from gradfeat_plugin.backbones import create_backbone, load_checkpoint
from gradfeat_plugin.errors import GradfeatError


def _resnet18(seed: int) -> nn.Module:
    """torchvision's ResNet-18 with ``fc = Identity``, as ``torchvision:resnet18``."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    return model.eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x).flatten(1), b.eval()(x).flatten(1))


def test_lightly_examples_sequential_of_children_maps_by_order(tmp_path: Path) -> None:
    # lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1])
    source = _resnet18(0)
    sequential = nn.Sequential(*list(source.children())[:-1])
    path = tmp_path / "simclr.ckpt"
    state = {f"backbone.{k}": v for k, v in sequential.state_dict().items()}
    state["projection_head.layers.0.weight"] = torch.ones(4, 512)
    torch.save({"state_dict": state}, path)
    target = _resnet18(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the head is left out on purpose, unwarned
        report = load_checkpoint(target, str(path))
    assert (report.prefix, report.layout) == ("backbone.", "order")
    assert report.unexpected == ["projection_head.layers.0.weight"]
    assert report.left_out == {"projection_head.": 1}
    assert _same(source, target)


def test_dino_student_and_teacher_need_a_choice(tmp_path: Path) -> None:
    student, teacher = _resnet18(0), _resnet18(1)
    state = {
        **{f"student_backbone.{k}": v for k, v in student.state_dict().items()},
        **{f"teacher_backbone.{k}": v for k, v in teacher.state_dict().items()},
    }
    path = tmp_path / "dino.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(GradfeatError, match=r"several backbones \(student_backbone\., "
                       r"teacher_backbone\.\); pick one with --weights-key"):
        load_checkpoint(_resnet18(2), str(path))
    target = _resnet18(2)
    report = load_checkpoint(target, str(path), weights_key="teacher_backbone")
    assert report.prefix == "teacher_backbone." and _same(teacher, target)
    with pytest.raises(GradfeatError, match=r"no key .* starts with 'momentum\.'.*"
                       r"student_backbone\. \(\d+\), teacher_backbone\."):
        load_checkpoint(target, str(path), weights_key="momentum")


def test_lightning_checkpoint_with_namespace_hyperparameters(tmp_path: Path) -> None:
    source = _resnet18(0)
    module = nn.Module()
    module.model = nn.Module()
    module.model.backbone = source
    args = argparse.Namespace(lr=0.1, data=Path("/data"), epochs=1)
    path = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"args": args},
                "pytorch-lightning_version": "2.4.0", "epoch": 0}, path)
    target = _resnet18(1)
    report = load_checkpoint(target, str(path), weights_key="model.backbone")
    assert report.prefix == "model.backbone." and report.missing == []
    assert _same(source, target)


def test_ddp_prefix_and_a_failure_that_names_the_prefixes(tmp_path: Path) -> None:
    source = _resnet18(0)
    path = tmp_path / "ddp.pth"
    torch.save({f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
               | {"module.queue": torch.zeros(3)}, path)
    target = _resnet18(1)
    report = load_checkpoint(target, str(path))
    assert report.prefix == "module.encoder_q." and _same(source, target)
    bad = tmp_path / "heads.pth"
    torch.save({"head.proj.weight": torch.ones(2), "head.pred.weight": torch.ones(2)}, bad)
    with pytest.raises(GradfeatError, match=r"keys start with head\.proj\. \(1\), "
                       r"head\.pred\. \(1\).*--weights-key PREFIX"):
        load_checkpoint(target, str(bad))


def test_input_size_from_the_flag_or_the_checkpoint_metadata(tmp_path: Path) -> None:
    source = create_backbone("timm:resnet10t", weights="random").model
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    default = create_backbone("timm:resnet10t", "random").input_size
    assert create_backbone("timm:resnet10t", str(path)).input_size == default != (3, 32, 32)
    (tmp_path / "resnet10t.json").write_text(
        json.dumps({"pretrained_cfg": {"input_size": [3, 32, 32]}}))
    assert create_backbone("timm:resnet10t", str(path)).input_size == (3, 32, 32)
    bb = create_backbone("timm:resnet10t", str(path), input_size="48")
    assert bb.input_size == (3, 48, 48)
    bb = create_backbone("timm:resnet10t", "random", input_size="3,40,40")
    assert bb.input_size == (3, 40, 40)
    with pytest.raises(GradfeatError, match="input size must be N or C,H,W"):
        create_backbone("timm:resnet10t", "random", input_size="big")
    assert copy.deepcopy(bb).num_features == 512
