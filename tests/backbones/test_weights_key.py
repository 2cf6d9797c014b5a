"""Which prefix a checkpoint's backbone is loaded from, what was left out on purpose,
and when the choice is the user's (``--weights-key``)."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import pytest
import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from gradfeat_plugin.backbones import checkpoint, create_backbone, load_checkpoint
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.errors import GradfeatError


def _encoder(seed: int) -> BiGANEncoder:
    torch.manual_seed(seed)
    return BiGANEncoder(width=4).eval()


class BYOL(nn.Module):
    """lightly's BYOL example module: backbone, heads and momentum copies."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(32, 16, 8)
        self.prediction_head = BYOLPredictionHead(8, 16, 8)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)


def _save(state: dict, path: Path) -> str:
    torch.save({"state_dict": state, "epoch": 0}, path)
    return str(path)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))


def test_byol_checkpoint_loads_the_backbone_and_summarises_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _encoder(0)
    byol = BYOL(source)
    path = _save(byol.state_dict(), tmp_path / "byol.ckpt")
    counts = {name: len(part.state_dict()) for name, part in byol.named_children()}
    caplog.set_level(logging.INFO, logger=checkpoint.__name__)
    target = _encoder(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unexpected: no warning
        report = load_checkpoint(target, str(path))
    assert report.prefix == "backbone." and _same(source, target)
    assert report.left_out == {f"{name}.": n for name, n in counts.items()
                               if name != "backbone"}
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        f"checkpoint {path}: {counts['backbone']} tensors loaded from backbone.*; "
        f"left out on purpose: backbone_momentum.* ({counts['backbone_momentum']}), "
        f"prediction_head.* ({counts['prediction_head']}), projection_head.* "
        f"({counts['projection_head']}), projection_head_momentum.* "
        f"({counts['projection_head_momentum']})"
    )


def test_keyless_and_keyed_runs_resolve_the_same_prefix(tmp_path: Path) -> None:
    path = _save(BYOL(_encoder(0)).state_dict(), tmp_path / "byol.ckpt")
    found = create_backbone("bigan_encoder", weights=path, width=4)
    given = create_backbone(
        "bigan_encoder", weights=path, width=4, weights_key="backbone."
    )
    assert found.weights_key == given.weights_key == "backbone"
    assert create_backbone("bigan_encoder", weights="random", width=4,
                           weights_key="backbone").weights_key == ""


def test_two_complete_backbones_are_an_error_listing_both(tmp_path: Path) -> None:
    first, second = _encoder(0), _encoder(1)
    state = {
        **{f"backbone.{k}": v for k, v in first.state_dict().items()},
        **{f"model.backbone.{k}": v for k, v in second.state_dict().items()},
        **{f"model.backbone_momentum.{k}": v for k, v in second.state_dict().items()},
    }
    path = _save(state, tmp_path / "two.ckpt")
    with pytest.raises(GradfeatError, match=r"holds several backbones \(backbone\., "
                       r"model\.backbone\.\); pick one with --weights-key PREFIX "
                       r"\(MODEL\.WEIGHTS_KEY\), e\.g\. --weights-key backbone$"):
        load_checkpoint(_encoder(2), path)
    target = _encoder(2)
    report = load_checkpoint(target, path, weights_key="model.backbone")
    assert report.prefix == "model.backbone." and _same(second, target)
    assert report.left_out == {"model.backbone_momentum.": len(state) // 3}


def test_hints_give_the_full_prefix(tmp_path: Path) -> None:
    student, teacher = _encoder(0), _encoder(1)
    state = {
        **{f"model.student.{k}": v for k, v in student.state_dict().items()},
        **{f"model.teacher.{k}": v for k, v in teacher.state_dict().items()},
    }
    path = _save(state, tmp_path / "dino.ckpt")
    for key in ("", "model"):
        with pytest.raises(GradfeatError, match=r"several backbones "
                           r"\(model\.student\., model\.teacher\.\).* "
                           r"e\.g\. --weights-key model\.student$"):
            load_checkpoint(_encoder(2), path, weights_key=key)
    target = _encoder(2)
    assert load_checkpoint(target, path, weights_key="model.teacher").prefix == (
        "model.teacher.")
    assert _same(teacher, target)
