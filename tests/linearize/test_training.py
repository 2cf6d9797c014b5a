"""Only w1, its bias and w2 train; θ and ω̄ stay bit-identical."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gradfeat_plugin import linearize

from .models import build


def test_only_head_and_tangents_train():
    torch.manual_seed(0)
    lin = linearize(build("bigan_encoder").float(), num_classes=5)
    lin.set_probe(torch.randn(5, lin.num_features), torch.randn(5))
    frozen = {k: v.clone() for k, v in lin.state_dict().items() if "head" not in k and "tangents" not in k}
    trainable = {n for n, p in lin.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"} | {f"tangents.{i}" for i in range(len(lin.tangents))}

    opt = torch.optim.Adam([p for p in lin.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    lin.train()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(lin(x), y).backward()
        opt.step()
    grads = {n: p.grad for n, p in lin.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    for k, v in lin.state_dict().items():
        if k in frozen:
            assert torch.equal(frozen[k], v), k
    assert all(t.abs().sum() > 0 for t in lin.tangents)
    assert not lin.suffix.training and not lin.prefix.training


def test_zero_tangents_reproduce_the_probe():
    torch.manual_seed(0)
    lin = linearize(build("timm_resnet18").float(), num_classes=3)
    weight, bias = torch.randn(3, lin.num_features), torch.randn(3)
    lin.set_probe(weight, bias)
    x = torch.randn(2, 3, 32, 32)
    f, _ = lin.features(x)
    assert torch.allclose(lin(x), f @ weight.T + bias, atol=1e-5)


def test_timm_interface():
    lin = linearize(build("timm_resnet18").float())
    x = torch.randn(2, 3, 32, 32)
    assert lin.num_classes == 0 and lin(x).shape == (2, 2 * lin.num_features)
    lin.reset_classifier(7)
    assert lin.get_classifier().out_features == 7
    assert lin(x).shape == (2, 7)
    assert lin.forward_head(lin.forward_features(x), pre_logits=True).shape == (2, 1024)
    assert lin.pretrained_cfg["num_classes"] == 7
    assert torch.equal(lin.probe_weight, lin.get_classifier().weight)


def test_standardization_is_an_affine_map_of_features_and_jvp():
    torch.manual_seed(0)
    lin = linearize(build("bigan_encoder"))
    with torch.no_grad():
        for _, t in lin.named_tangents():
            t.normal_()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    f, jvp = lin.features(x)
    mean, std = torch.randn(lin.num_features).double(), torch.rand(lin.num_features).double() + 0.5
    lin.standardize.set(mean, std)
    f2, jvp2 = lin.features(x)
    assert torch.allclose(f2, (f - mean) / std, atol=1e-12)
    assert torch.allclose(jvp2, jvp / std, atol=1e-12)
