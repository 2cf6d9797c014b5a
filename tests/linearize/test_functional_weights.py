"""Weights a model uses outside its module's call (``F.linear(x, self.qkv.weight)``,
or through a function ``torch.fx`` keeps as a leaf): the NTK scale and w2's gradient
reach them, and the self-check refuses a linearisation where they would not."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import fx, nn
from torch.nn import functional as F

from gradfeat_plugin import linearize
from gradfeat_plugin.coverage import EXACT_TOLERANCE, finite_difference_error
from gradfeat_plugin.linearize import LinearizationError, ntk_scales
from gradfeat_plugin.linearize._verify import verify_linearization

from .test_exactness import central_difference, relative_error


class _FunctionalAttention(nn.Module):
    """BEiT's attention in miniature: the qkv weight is read by ``F.linear`` with a
    bias assembled from separate q and v biases (k has none)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(0.1 * torch.randn(dim))
        self.v_bias = nn.Parameter(0.1 * torch.randn(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).chunk(3, dim=-1)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        return x + self.proj(attention @ v)


class _TokenNet(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.block = _FunctionalAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.block(tokens).mean(1)


def _token_net() -> nn.Module:
    torch.manual_seed(0)
    return _TokenNet().double().eval()


X = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_every_tangent_matches_finite_differences_at_its_documented_scale():
    model = _token_net()
    lin = linearize(model, split="block", input_size=(3, 16, 16))
    names = [n for n, _ in lin.named_tangents()]
    documented = ntk_scales(model, names)
    assert documented["block.qkv.weight"] == pytest.approx(math.sqrt(1 / 24))
    assert documented["block.proj.weight"] == pytest.approx(math.sqrt(1 / 8))
    generator = torch.Generator().manual_seed(2)
    for name in names:
        direction = torch.randn(dict(model.named_parameters())[name].shape,
                                generator=generator, dtype=torch.float64)
        with torch.no_grad():
            for other, tangent in lin.named_tangents():
                tangent.copy_(direction if other == name else torch.zeros_like(tangent))
            _, jvp = lin.features(X)
        expected = central_difference(model, {name: documented[name] * direction}, X)
        assert relative_error(jvp, expected) < 1e-6, name


def test_beit_is_exact_at_the_documented_scales():
    torch.manual_seed(0)
    model = timm.create_model(
        "beit_base_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2,
        embed_dim=48, num_heads=4,
    ).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    lin = linearize(model, split="blocks.1", input_size=(3, 32, 32))
    assert lin.check.gradient_error < 1e-9
    assert finite_difference_error(model, ["blocks.1"], x, lin.engine, ntk=True) < EXACT_TOLERANCE


def test_self_check_refuses_a_tangent_off_its_documented_scale():
    model = _token_net()
    lin = linearize(model, split="block", input_size=(3, 16, 16), verify=False)
    index = lin._tangent_names.index("block.qkv.weight")
    lin._scales[index] = 1.0  # what reading the scale off the traced suffix gave
    with pytest.raises(LinearizationError, match=r"block\.qkv\.weight"):
        verify_linearization(lin, model, torch.randn(2, 3, 16, 16).double())


def _cosine_window_attention(
    x: torch.Tensor, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor, pad: int
) -> torch.Tensor:
    """Swin-V2's attention in miniature: the window is padded with zero tokens, the
    k bias is zeroed, so padded keys are exact zero vectors that get normalised."""
    x = F.pad(x, (0, 0, 0, pad))
    bias = qkv_bias.clone()
    length = bias.numel() // 3
    bias[length : 2 * length].zero_()
    q, k, v = F.linear(x, qkv_weight, bias).chunk(3, dim=-1)
    attention = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    return (attention.softmax(-1) @ v)[:, : x.shape[1] - pad]


fx.wrap("_cosine_window_attention")


class _WrappedAttention(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _cosine_window_attention(x, self.qkv.weight, self.qkv.bias, 3)
        return x + self.proj(out)


class _WindowNet(_TokenNet):
    def __init__(self, dim: int = 8) -> None:
        super().__init__(dim)
        self.block = _WrappedAttention(dim)


@pytest.mark.parametrize("engine", ["dual", "func"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tangents_behind_an_fx_leaf_function_train(engine, dtype):
    torch.manual_seed(0)
    model = _WindowNet().to(dtype).eval()
    lin = linearize(model, split="block", input_size=(3, 16, 16), engine=engine,
                    num_classes=3)
    assert lin.check.gradient_error < 1e-9
    lin(X.to(dtype)).logsumexp(1).mean().backward()
    grads = {name: t.grad for name, t in lin.named_tangents()}
    assert set(grads) == {"block.qkv.weight", "block.qkv.bias", "block.proj.weight",
                          "block.proj.bias"}
    for name, grad in grads.items():
        assert grad is not None and bool(grad.isfinite().all()), name
        assert float(grad.abs().sum()) > 0, name


class _DetachedTangent(torch.autograd.Function):
    """The identity, whose forward-mode rule cuts its tangent off autograd: the JVP
    is right, but nothing before it can get a gradient through the JVP."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad

    @staticmethod
    def jvp(ctx, tangent):
        return tangent.detach()


class _CutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.first = nn.Conv2d(4, 4, 3, padding=1)
        self.last = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if x.sum() > float("inf"):  # untraceable, so the Function stays a Function
            x = -x
        hidden = _DetachedTangent.apply(self.first(torch.relu(self.stem(x))))
        return self.last(torch.relu(hidden)).mean((2, 3))


def test_self_check_names_a_tangent_that_would_never_train():
    torch.manual_seed(0)
    with pytest.raises(LinearizationError, match=r"first\.weight") as info, pytest.warns(
        UserWarning
    ):
        linearize(_CutNet().eval(), split=["first", "last"], input_size=(3, 8, 8),
                  engine="dual")
    assert "no gradient" in str(info.value)
