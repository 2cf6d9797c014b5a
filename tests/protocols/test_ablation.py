"""The Table 1 ablation: gradients of a re-initialised network beside pretrained activations."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin import linearize
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.config.protocol_kwargs import protocol_kwargs
from gradfeat_plugin.protocols import GradfeatClassifier, run_protocols

from .conftest import build, make_cfg


def _with(cfg, **ablation):
    cfg.defrost()
    for key, value in ablation.items():
        cfg.ABLATION[key] = value
    return cfg


@pytest.mark.parametrize("part", ["THETA1", "THETA2"])
def test_activations_stay_pretrained_while_the_jvp_is_ablated(backbone, part):
    cfg = _with(make_cfg(), **{part: "random"})
    x = torch.randn(4, 3, 16, 16)
    ablated = build("gradfeat", backbone.model, 10, cfg, split=backbone.split)
    plain = build("gradfeat", backbone.model, 10, make_cfg(), split=backbone.split)
    # θ1's stored outputs serve a re-initialised θ2, not a re-initialised θ1.
    assert GradfeatClassifier.can_cache(**protocol_kwargs(cfg, "gradfeat")) == (
        part == "THETA2"
    )
    assert GradfeatClassifier.can_cache(**protocol_kwargs(make_cfg(), "gradfeat"))
    for module in (ablated, plain):
        with torch.no_grad():
            for _, t in module.model.named_tangents():
                t.fill_(0.01)
    f_ablated, jvp_ablated = ablated.model.features(x)
    f_plain, jvp_plain = plain.model.features(x)
    assert torch.allclose(f_ablated, f_plain, atol=1e-6)
    assert torch.allclose(f_plain, backbone.model.eval()(x), atol=1e-5)
    assert (jvp_ablated - jvp_plain).abs().max() > 1e-3


def test_random_probe_only_changes_the_gradient_term(backbone):
    cfg = _with(make_cfg(), PROBE="random")
    module = build("grad", backbone.model, 10, cfg, split=backbone.split)
    weight, bias = torch.randn(10, backbone.num_features), torch.randn(10)
    module.set_probe(weight, bias)
    assert not torch.equal(module.model.probe_weight, weight)
    assert torch.equal(module.model.head.weight, weight)
    again = build("grad", backbone.model, 10, cfg, split=backbone.split)
    again.set_probe(weight, bias)
    assert torch.equal(again.model.probe_weight, module.model.probe_weight)


def test_linearize_with_activation_model():
    torch.manual_seed(0)
    from gradfeat_plugin.backbones.bigan import BiGANEncoder

    pretrained, other = BiGANEncoder(width=8).eval(), BiGANEncoder(width=8).eval()
    lin = linearize(other, activation_model=pretrained)
    x = torch.randn(2, 3, 32, 32)
    assert len(lin.forward_prefix(x)) == 2
    f, _ = lin.features(x)
    assert torch.allclose(f, pretrained(x), atol=1e-6)


def test_bad_ablation_value(backbone, digits):
    cfg = _with(make_cfg(), THETA2="shuffled")
    with pytest.raises(GradfeatError, match="ABLATION.THETA2"):
        run_protocols(["grad"], backbone, digits, cfg, progress=False)


def test_random_theta2_reads_the_pretrained_theta1_outputs(backbone):
    """With θ1 shared, f comes from the pretrained θ2 on the same θ1 outputs: the
    boundary is the pretrained network's, so its cache serves the ablation."""
    cfg = _with(make_cfg(), THETA2="random")
    x = torch.randn(4, 3, 16, 16)
    ablated = build("gradfeat", backbone.model, 10, cfg, split=backbone.split).model
    plain = build("gradfeat", backbone.model, 10, make_cfg(), split=backbone.split).model
    assert ablated.activation_model is None and ablated.activation_suffix is not None
    boundary = plain.forward_prefix(x)
    assert all(torch.equal(a, b) for a, b in zip(ablated.forward_prefix(x), boundary))
    with torch.no_grad():
        for module in (ablated, plain):
            for _, t in module.named_tangents():
                t.fill_(0.01)
    f_cached, jvp_cached = ablated.features_from_prefix(boundary)
    f_images, jvp_images = ablated.features(x)
    assert torch.allclose(f_cached, plain.features_from_prefix(boundary)[0], atol=1e-6)
    assert torch.equal(f_cached, f_images) and torch.equal(jvp_cached, jvp_images)
    assert (jvp_cached - plain.features_from_prefix(boundary)[1]).abs().max() > 1e-3


def test_ablated_theta2_gives_the_same_numbers_cached_or_not(backbone, digits):
    cfg = _with(make_cfg(), THETA2="random")
    cached = run_protocols(["grad"], backbone, digits, cfg, progress=False)[0]
    cfg.TRAIN.CACHE_FEATURES = False
    plain = run_protocols(["grad"], backbone, digits, cfg, progress=False)[0]
    assert cached.extra["cached"] and not plain.extra["cached"]
    assert cached.value == pytest.approx(plain.value, abs=1e-6)
