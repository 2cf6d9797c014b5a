"""The JVP equals central finite differences of the untouched model (float64)."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin import linearize
from gradfeat_plugin.linearize import ENGINES

from .models import BACKBONES, build


@torch.no_grad()
def central_difference(model, direction, x, r=1e-6):
    params = dict(model.named_parameters())
    for name, d in direction.items():
        params[name].add_(r * d)
    plus = model(x)
    for name, d in direction.items():
        params[name].sub_(2 * r * d)
    minus = model(x)
    for name, d in direction.items():
        params[name].add_(r * d)
    return (plus - minus) / (2 * r)


def random_tangents(lin, seed=1):
    gen = torch.Generator().manual_seed(seed)
    direction = {}
    with torch.no_grad():
        for name, t in lin.named_tangents():
            t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
            direction[name] = t.detach().clone()
    return direction


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_jvp_matches_finite_differences(name, engine):
    model = build(name)
    lin = linearize(model, fold_bn=False, ntk=False, engine=engine)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    direction = random_tangents(lin)
    f, jvp = lin.features(x)
    reference = central_difference(model, direction, x)
    assert reference.norm() > 0
    assert relative_error(jvp, reference) < 1e-6
    assert torch.allclose(f, model(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_engines_agree(name):
    model = build(name)
    outputs = []
    for engine in sorted(ENGINES):
        lin = linearize(model, engine=engine)
        random_tangents(lin)
        outputs.append(lin.features(torch.ones(2, 3, 32, 32, dtype=torch.float64)))
    for f, jvp in outputs[1:]:
        assert torch.allclose(f, outputs[0][0], rtol=1e-12, atol=1e-12)
        assert relative_error(jvp, outputs[0][1]) < 1e-10


def test_zero_tangents_give_zero_jvp():
    lin = linearize(build("bigan_encoder"))
    f, jvp = lin.features(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert f.abs().sum() > 0
    assert torch.count_nonzero(jvp) == 0
