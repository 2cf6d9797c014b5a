"""Every cause that once made an architecture fail or silently wrong, one model each.

Pooled width ≠ num_features, eval-mode attention-bias caches, ops without a
forward-mode derivative (MHA fast path, oneDNN LSTM, hard sigmoid's backward),
Python values at the cut, an optional ``mask=None`` argument, and a default θ2 that
must be a real block; plus the self-check that refuses what it cannot verify.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from gradfeat_plugin import create_backbone, default_split, linearize
from gradfeat_plugin.coverage import (
    EXACT_TOLERANCE,
    finite_difference_error,
    randomize_batchnorm,
)
from gradfeat_plugin.linearize import LinearizationError

ROOT = Path(__file__).resolve().parents[2]


def _exact(model: nn.Module, size: int, **kwargs) -> tuple:
    """Linearise (self-check on), then compare the JVP with finite differences."""
    model = randomize_batchnorm(model.eval())
    lin = linearize(model, input_size=(3, size, size), **kwargs)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return lin, finite_difference_error(model, lin.split, x, lin.engine)


def _trains(lin, size: int) -> bool:
    """One float32 step: w2 receives a non-zero gradient."""
    lin.reset_classifier(3)
    logits = lin(torch.randn(2, 3, size, size))
    logits.square().sum().backward()
    return any(t.grad is not None and bool(t.grad.ne(0).any()) for t in lin.tangents)


def test_pooled_width_is_the_real_output_not_num_features():
    model = timm.create_model("mobilenetv3_small_050", num_classes=0)
    assert model.num_features == 288  # the width before timm's pre-logits conv
    lin = linearize(model, input_size=(3, 64, 64))
    f, jvp = lin.features(torch.randn(2, 3, 64, 64))
    assert lin.num_features == f.shape[1] == jvp.shape[1] == 1024
    assert create_backbone("timm:mobilenetv3_small_050", weights="random").num_features == 1024


def test_attention_bias_caches_are_bypassed_and_the_jvp_is_exact():
    # LeViT memoises its attention biases in eval mode; tracing twice used to fail.
    lin, error = _exact(timm.create_model("levit_128s", num_classes=0, img_size=64), 64)
    assert error <= EXACT_TOLERANCE
    assert any("attention_biases" in name for name, _ in lin.named_tangents())
    assert _trains(lin, 64)


class _MemoisedBias(nn.Module):
    """Memoises a parameter-derived tensor in eval mode, under a name no bypass knows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.offset = nn.Parameter(torch.randn(4, 1, 1))
        self.memo: dict[str, torch.Tensor] = {}

    def forward(self, x):
        if self.training:
            return self.conv(x) + self.offset
        if "offset" not in self.memo:
            self.memo["offset"] = self.offset.detach().clone()
        return self.conv(x) + self.memo["offset"]


class _MemoNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.top = _MemoisedBias()

    def forward(self, x):
        return self.top(torch.relu(self.stem(x))).mean((2, 3))


def test_parameters_the_jvp_cannot_see_are_reported():
    model = _MemoNet().eval()
    model(torch.randn(1, 3, 8, 8))  # fills the memo
    with pytest.warns(UserWarning, match=r"top\.offset"):
        linearize(model, split="top", fold_bn=False, input_size=(3, 8, 8))


class _WrongTangent(torch.autograd.Function):
    """Doubles its input, with a forward-mode rule that forgets the factor."""

    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad

    @staticmethod
    def jvp(ctx, tangent):
        return tangent


class _WrongRuleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.top = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if x.sum() > float("inf"):  # untraceable, so the Function stays a Function
            x = -x
        return _WrongTangent.apply(self.top(torch.relu(self.stem(x)))).mean((2, 3))


def test_self_check_refuses_an_inexact_jvp():
    with pytest.raises(LinearizationError, match="top") as info, pytest.warns(UserWarning):
        linearize(_WrongRuleNet(), split="top", input_size=(3, 8, 8), engine="forward_ad")
    assert "adjoint identity" in str(info.value)


def test_multihead_attention_fast_path_is_off_inside_the_jvp():
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    vit.heads = nn.Identity()
    lin, error = _exact(vit, 32)
    assert lin.split == ["encoder.layers.encoder_layer_1"]
    assert error <= EXACT_TOLERANCE and _trains(lin, 32)


class _RowLSTM(nn.Module):
    """Sequencer-style: an LSTM over image rows as θ2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.rnn = nn.LSTM(8, 8, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(16, 8)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        rows, _ = self.rnn(x.permute(0, 2, 3, 1).reshape(b * h, w, c))
        return self.proj(rows).reshape(b, h * w, c).mean(1)


def test_onednn_lstm_falls_back_to_an_engine_that_works_and_says_so():
    with pytest.warns(UserWarning, match="func_no_onednn"):
        lin = linearize(_RowLSTM(), split="rnn", input_size=(3, 16, 16))
    assert lin.engine == "func_no_onednn"
    assert [name for name, _ in lin.check.rejected] == ["dual", "func"]
    assert _trains(lin, 16)
    _, error = _exact(_RowLSTM(), 16, split="rnn")
    assert error <= EXACT_TOLERANCE


def test_hard_sigmoid_gates_train_in_float32():
    # ese_vovnet's effective squeeze-excitation gates with nn.Hardsigmoid, whose
    # backward has no derivative; the JVP's gradient needs one.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Hardsigmoid(), nn.Conv2d(8, 8, 3), nn.Hardsigmoid(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    lin = linearize(model, split="2", input_size=(3, 8, 8))
    assert lin.engine == "dual" and _trains(lin, 8)
    _, error = _exact(model, 8, split="2")
    assert error <= EXACT_TOLERANCE


class _ShapesAcrossTheCut(nn.Module):
    """Hands θ2 its batch size, height and width as Python ints, like DaViT."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.top = nn.Linear(8, 8)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        tokens = self.top(x.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(b, c, h, w).mean((2, 3))


@pytest.mark.parametrize("verify", [True, False])
def test_python_values_at_the_cut_are_constants_not_cached(verify):
    lin = linearize(
        _ShapesAcrossTheCut().double(), split="top", input_size=(3, 8, 8), verify=verify
    )
    with torch.no_grad():
        for _, t in lin.named_tangents():
            t.normal_()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    cached = lin.forward_prefix(x)
    assert all(isinstance(t, torch.Tensor) for t in cached)
    for batch in (slice(0, 2), slice(2, 5), slice(4, 5)):  # other batch sizes too
        f1, j1 = lin.features_from_prefix(tuple(t[batch] for t in cached))
        f2, j2 = lin.features(x[batch])
        assert torch.equal(f1, f2) and torch.equal(j1, j2)
    with pytest.raises(ValueError, match="forward_prefix at this input size"):
        lin.features_from_prefix(lin.prefix(torch.randn(2, 3, 16, 16, dtype=torch.float64))[:1])


class _OptionalMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.top = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * mask
        return self.top(torch.relu(self.stem(x))).mean((2, 3))


def test_an_optional_argument_traces_with_its_default():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the untraced path
        lin = linearize(_OptionalMask(), split="top", input_size=(3, 8, 8))
    assert lin.traced


@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda: timm.create_model("hiera_tiny_224", num_classes=0), "blocks.11"),
        (lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=0),
         "layers.3.blocks.1"),
        (lambda: timm.create_model("densenet121", num_classes=0),
         "features.denseblock4.denselayer16"),
        (lambda: timm.create_model("twins_svt_small", num_classes=0), "blocks.3.3"),
        (lambda: timm.create_model("regnetx_002", num_classes=0), "s4.b7"),
        (lambda: torchvision.models.vit_b_16(), "encoder.layers.encoder_layer_11"),
        (lambda: torchvision.models.efficientnet_b0(), "features.7.0"),
        (lambda: torchvision.models.convnext_tiny(), "features.7.2"),
        (lambda: torchvision.models.googlenet(init_weights=False), "inception5b"),
    ],
)
def test_default_split_is_the_last_real_block(build, expected):
    model = build()
    assert default_split(model) == [expected]
    block = model.get_submodule(expected)
    share = sum(p.numel() for p in block.parameters()) / sum(
        p.numel() for p in model.parameters()
    )
    assert share >= 0.01
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in block.modules()) >= 2


def test_list_splits_marks_the_default():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval.py"), "--list-splits",
         "torchvision:resnet18"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    default = [line for line in lines if "(default)" in line]
    assert len(default) == 1 and default[0].split()[0] == "layer4.1"
    assert "4,720,640" in default[0]
    assert any(line.split()[0] == "layer4" for line in lines[1:-1])


def test_coverage_script_reports_real_architectures(tmp_path):
    out, rows = tmp_path / "COVERAGE.md", tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "coverage.py"), "--only",
         "timm:levit_128s", "timm:ese_vovnet19b_dw", "--no-timing", "--out", str(out),
         "--json", str(rows)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = out.read_text()
    assert "**2 of 2 pass (100.0 %)**" in report
    assert "| `timm:levit_128s` | 3×224×224 | `stages.2.blocks.3` |" in report
    assert "| `timm:levit_128s` | 3×224×224 | `stages.2.blocks.3` | 12.7 | dual |" in report

    saved = json.loads(rows.read_text())["rows"]
    assert all(row["jvp_error"] <= EXACT_TOLERANCE for row in saved)
    assert all(row["cache_ok"] and row["real_block"] for row in saved)


def test_the_backbone_carries_the_input_size_it_is_fed():
    backbone = create_backbone("timm:resnet18", weights="random", input_size=32)
    assert backbone.input_size == (3, 32, 32)
    assert tuple(backbone.model.pretrained_cfg["input_size"]) == (3, 32, 32)
    assert linearize(backbone.model).pretrained_cfg["input_size"] == (3, 32, 32)
