"""BN folding and the NTK parametrisation leave f(x) alone and only rescale w2."""

from __future__ import annotations

import math

import pytest
import torch

from gradfeat_plugin import linearize

from .models import build
from .test_exactness import random_tangents, relative_error

X = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", ["timm_resnet18", "torchvision_resnet18", "bigan_encoder"])
def test_folding_and_ntk_match_the_plain_jvp(name):
    model = build(name)
    lin = linearize(model)
    assert lin.folded, "every conv of these θ2 blocks is followed by a BatchNorm"
    folded = random_tangents(lin)
    reference = linearize(model, fold_bn=False, ntk=False)
    tangents = dict(reference.named_tangents())
    modules = dict(model.named_modules())
    with torch.no_grad():
        for t in tangents.values():
            t.zero_()
        for conv_name, norm_name in lin.folded:
            conv, norm = modules[conv_name], modules[norm_name]
            bn_scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            c_weight = math.sqrt(1.0 / conv.out_channels)
            tangents[f"{conv_name}.weight"].copy_(
                c_weight * folded[f"{conv_name}.weight"] / bn_scale.view(-1, 1, 1, 1)
            )
            tangents[f"{norm_name}.bias"].copy_(math.sqrt(0.1) * folded[f"{conv_name}.bias"])
    f, jvp = lin.features(X)
    f_ref, jvp_ref = reference.features(X)
    assert torch.allclose(f, model(X), rtol=0, atol=1e-10)
    assert torch.allclose(f, f_ref, rtol=0, atol=1e-10)
    assert relative_error(jvp, jvp_ref) < 1e-9


@pytest.mark.parametrize("fold_bn,ntk", [(True, False), (False, True), (True, True)])
def test_switches_keep_activations(fold_bn, ntk):
    model = build("torchvision_resnet18")
    lin = linearize(model, fold_bn=fold_bn, ntk=ntk)
    assert bool(lin.folded) == fold_bn
    assert torch.allclose(lin.features(X)[0], model(X), rtol=0, atol=1e-10)


def test_ntk_scales_each_tangent():
    model = build("bigan_encoder")
    plain = linearize(model, fold_bn=True, ntk=False)
    ntk = linearize(model, fold_bn=True, ntk=True)
    for lin in (plain, ntk):
        with torch.no_grad():
            for name, t in lin.named_tangents():
                t.fill_(1.0 if name == "conv4.0.weight" else 0.0)
    scale = math.sqrt(1.0 / model.conv4[0].out_channels)
    assert relative_error(ntk.features(X)[1], scale * plain.features(X)[1]) < 1e-12


def test_original_model_is_untouched():
    model = build("bigan_encoder")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linearize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.conv4[1], torch.nn.BatchNorm2d)
