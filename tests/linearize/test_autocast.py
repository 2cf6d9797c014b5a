"""The JVP under bf16 autocast on the CPU (finite, close to float32, trainable)
and under inference mode (Lightning's ``validate``), where forward AD is off."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.nn import functional as F

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.linearize import linearize
from tests.conftest import randomize_batchnorm

# bfloat16 keeps 8 bits of mantissa (relative rounding 0.4 %): f is off by about
# 1 %, the JVP of a residual block, a sum of terms that partly cancel, by about
# 9 % on every engine, and w2's gradient by 8 % (dual) to 20 % (func).
BF16_TOLERANCE = {"dual": 0.12, "func": 0.3}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    return randomize_batchnorm(model, 0)


@pytest.mark.parametrize("engine", ["dual", "func"])
def test_bf16_autocast_jvp_is_finite_close_and_trainable(resnet, engine):
    torch.set_num_threads(1)
    lin = linearize(resnet, "layer4.1", engine=engine, num_classes=5, input_size=(3, 32, 32))
    generator = torch.Generator().manual_seed(1)
    for t in lin.tangents:
        t.data = 0.05 * torch.randn(t.shape, generator=generator)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    y = torch.tensor([0, 1, 2, 3])
    f32, jvp32 = lin.features(x)
    loss32 = F.cross_entropy(lin(x), y)
    grads32 = torch.autograd.grad(loss32, list(lin.tangents))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f16, jvp16 = lin.features(x)
        logits = lin(x)
        loss16 = F.cross_entropy(logits, y)
    assert logits.dtype == torch.bfloat16  # the autocast really ran the layers in bf16
    grads16 = torch.autograd.grad(loss16, list(lin.tangents))
    for ours, reference in [(f16, f32), (jvp16, jvp32), *zip(grads16, grads32)]:
        assert torch.isfinite(ours).all()
        error = (ours.float() - reference).norm() / reference.norm()
        assert error < BF16_TOLERANCE[engine]
    assert all(g.dtype == torch.float32 for g in grads16)  # w2 stays float32
    assert float(jvp32.norm()) > 0


@pytest.mark.parametrize("engine", ["dual", "forward_ad", "func"])
def test_inference_mode_gives_the_same_jvp(engine):
    torch.manual_seed(0)
    lin = linearize(BiGANEncoder(width=8, img_size=16).eval(), ["conv4"], engine=engine)
    for t in lin.tangents:
        t.data = torch.randn_like(t)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = lin.features(x)[1]
    with torch.inference_mode():
        got = lin.features(x)[1]
    assert expected.abs().max() > 0.1
    assert torch.equal(got, expected)
