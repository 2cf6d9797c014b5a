"""The Table 1 ablation: gradients of a re-initialised network beside pretrained activations."""

from __future__ import annotations

import math

import pytest
import torch

from gradfeat_plugin import linearize
from gradfeat_plugin.backbones.bigan import BiGANALIEncoder
from gradfeat_plugin.linearize import reinitialize
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.config.protocol_kwargs import protocol_kwargs
from gradfeat_plugin.protocols import run_protocols
from gradfeat_plugin.protocols.run import _ProtocolRun

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
    # The pretrained θ1's outputs serve a re-initialised θ2; a re-initialised θ1
    # takes its own, with the pretrained features beside them.
    assert len(ablated.model.forward_prefix(x)) == len(plain.model.forward_prefix(x)) + (
        part == "THETA1"
    )
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


@pytest.mark.parametrize("init", ["default", "ntk"])
def test_random_theta2_reads_the_pretrained_theta1_outputs(backbone, init):
    """With θ1 shared, f comes from the pretrained θ2 on the same θ1 outputs: the
    boundary is the pretrained network's, so its cache serves the ablation (also
    when the random θ2 has its BatchNorms folded)."""
    cfg = _with(make_cfg(), THETA2="random", INIT=init)
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


def test_ablated_theta1_gives_the_same_numbers_stored_or_not(backbone, digits):
    """A re-initialised θ1's outputs are stored apart from the pretrained ones, the
    pretrained features beside them, and grad and gradfeat train on them in one
    pass: the numbers of running the whole network every step."""
    cfg = _with(make_cfg(), THETA1="random")
    names = ["grad", "gradfeat"]
    stored = run_protocols(names, backbone, digits, cfg, progress=False)
    pretrained = run_protocols(names, backbone, digits, make_cfg(), progress=False)
    cfg.TRAIN.CACHE_FEATURES = False
    plain = run_protocols(names, backbone, digits, cfg, progress=False)
    for ours, whole, usual in zip(stored, plain, pretrained):
        assert ours.extra["cached"] and not whole.extra["cached"]
        assert ours.extra["runs_in_pass"] == 2
        assert ours.value == pytest.approx(whole.value, abs=1e-6)
    # The gradient-only probe reads nothing but the JVP, through the random θ1.
    assert abs(stored[0].value - pretrained[0].value) > 0.01


def test_outputs_of_another_theta1_are_refused(backbone, digits, monkeypatch):
    """The stored outputs must come from the very θ1 the protocol re-initialised."""
    theta1 = _ProtocolRun._random_theta1
    monkeypatch.setattr(
        _ProtocolRun, "_random_theta1",
        lambda run, name: None if (seed := theta1(run, name)) is None else seed + 1,
    )
    cfg = _with(make_cfg(), THETA1="random")
    with pytest.raises(RuntimeError, match="not the one whose outputs were stored"):
        run_protocols(["grad"], backbone, digits, cfg, progress=False)


def _kurtosis(values: torch.Tensor) -> float:
    centred = values.double().flatten() - values.double().mean()
    return float((centred**4).mean() / (centred**2).mean() ** 2)


def test_ntk_init_draws_theta2_and_omega_as_the_authors_init():
    """ABLATION.INIT ntk: as NTKConv2d.init() and NTKLinear.init() of the authors'
    src/util.py, N(0, 1) in the NTK coordinates: the folded θ2's effective weights
    have std √(1/out_channels), its biases √0.1, ω √(1/num_classes); Gaussian
    (kurtosis 3, where the default's uniform draws have 1.8)."""
    encoder = BiGANALIEncoder().eval()
    split = ["conv3", "conv4", "conv5"]
    cfg = _with(make_cfg(), THETA2="random", PROBE="random", INIT="ntk")
    module = build("gradfeat", encoder, 10, cfg, split=split)
    module.set_probe(torch.randn(10, 512), torch.zeros(10))
    lin = module.model
    theta2 = dict(lin.suffix.named_parameters())
    names = [f"conv{i}.0.{p}" for i in (3, 4, 5) for p in ("weight", "bias")]
    assert sorted(theta2) == sorted(names)
    biases = torch.cat([theta2[f"conv{i}.0.bias"] for i in (3, 4, 5)])
    assert biases.std().item() == pytest.approx(math.sqrt(0.1), rel=0.1)
    assert abs(biases.mean().item()) < 4 * math.sqrt(0.1 / len(biases))
    for i, out_channels in ((3, 128), (4, 256), (5, 512)):
        weight = theta2[f"conv{i}.0.weight"]
        std = weight.std().item()
        assert std == pytest.approx(math.sqrt(1 / out_channels), rel=0.01)
        assert abs(weight.mean().item()) < 4 * std / weight.numel() ** 0.5
        assert _kurtosis(weight) == pytest.approx(3.0, abs=0.1)
    omega = lin.probe_weight
    assert omega.std().item() == pytest.approx(math.sqrt(1 / 10), rel=0.05)
    assert _kurtosis(omega) == pytest.approx(3.0, abs=0.3)
    # Activations stay the pretrained network's.
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(lin.features(x)[0], encoder(x), atol=1e-5)


def test_default_init_draws_theta2_and_omega_by_the_layers_initialisers():
    encoder = BiGANALIEncoder().eval()
    cfg = _with(make_cfg(), THETA2="random", PROBE="random")
    module = build("gradfeat", encoder, 10, cfg, split=["conv5"])
    module.set_probe(torch.randn(10, 512), torch.zeros(10))
    theta2 = dict(module.model.suffix.named_parameters())
    # Kaiming-uniform (a = √5), the reset BatchNorm folded in: no bias.
    fan_in = 256 * 4 * 4
    expected = 1 / math.sqrt(3 * fan_in) / math.sqrt(1 + 1e-5)
    assert theta2["conv5.0.weight"].std().item() == pytest.approx(expected, rel=0.01)
    assert theta2["conv5.0.bias"].abs().max() == 0
    # ω as nn.Linear's weight: uniform in ±1/√512, std 1/√(3·512).
    omega = module.model.probe_weight
    assert omega.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.05)
    assert _kurtosis(omega) == pytest.approx(1.8, abs=0.1)


def test_ntk_init_is_for_theta2():
    encoder = BiGANALIEncoder().eval()
    with pytest.raises(ValueError, match="θ2 only"):
        reinitialize(encoder, ["conv5"], "theta1", init="ntk")
    with pytest.raises(ValueError, match="init must be one of default, ntk"):
        reinitialize(encoder, ["conv5"], "theta2", init="xavier")
    cfg = _with(make_cfg(), THETA1="random", INIT="ntk")
    module = build("gradfeat", encoder, 10, cfg, split=["conv5"])
    # θ1 drawn by its own initialisers, its BatchNorms kept; θ2 the pretrained one.
    norms = [n for n, m in module.model.prefix.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 4
    pretrained = linearize(encoder, ["conv5"]).suffix.get_parameter("conv5.0.weight")
    assert torch.equal(module.model.suffix.get_parameter("conv5.0.weight"), pretrained)
