"""grad and gradfeat trained in one shared pass are the models trained alone."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from gradfeat_plugin.linearize import linearize
from gradfeat_plugin.linearize.backbone import check_shared_expansion, joint_features_from_prefix
from gradfeat_plugin.zoo.archs import SmallResNet
from gradfeat_plugin.protocols import GradClassifier, run_protocols
from gradfeat_plugin.protocols._models import linearized_from

from .conftest import Splits, make_cfg, make_splits

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def joint_and_alone(backbone, digits):
    cfg = make_cfg(epochs=2)
    joint = run_protocols(["grad", "gradfeat"], backbone, digits, cfg, progress=False)
    alone = [
        run_protocols([name], backbone, digits, cfg, progress=False)[0]
        for name in ("grad", "gradfeat")
    ]
    return joint, alone


def test_joint_pass_gives_the_numbers_of_separate_runs(joint_and_alone):
    joint, alone = joint_and_alone
    assert [r.protocol for r in joint] == ["grad", "gradfeat"]
    for shared, single in zip(joint, alone):
        assert shared.status == single.status == "ok"
        assert shared.value == pytest.approx(single.value, abs=TOLERANCE)
        assert shared.extra["val_loss"] == pytest.approx(single.extra["val_loss"], abs=TOLERANCE)
        assert shared.trainable_params == single.trainable_params
        assert "trained_with" not in single.extra
    assert joint[0].extra["trained_with"] == ["gradfeat"]
    assert joint[0].wall_time_s == pytest.approx(joint[0].extra["shared_wall_time_s"] / 2)
    # The two are different models: gradfeat reads f, grad does not.
    assert joint[0].value != joint[1].value


@pytest.mark.parametrize("engine", ["dual", "func"])
@pytest.mark.parametrize("residual", [False, True], ids=["conv", "residual"])
def test_shared_features_equal_each_backbones_own(backbone, engine, residual):
    """Also on timm residual blocks, which add the shortcut and apply the ReLU in
    place to the outputs the shared pass reuses."""
    torch.manual_seed(0)
    model, split = (SmallResNet(depths=(1, 1, 2)).eval(), ["layer3"]) if residual else (
        backbone.model, ["conv4"])
    lins = [linearize(model, split, engine=engine, num_classes=10) for _ in range(2)]
    for lin, scale in zip(lins, (1.0, -3.0)):
        for t in lin.tangents:
            t.data = scale * torch.randn_like(t)
    boundary = lins[0].forward_prefix(torch.randn(6, 3, 16, 16))
    shared = joint_features_from_prefix(lins, boundary)
    grads_shared = torch.autograd.grad(
        sum((jvp * (k + 1)).sum() for k, (_, jvp) in enumerate(shared)),
        [t for lin in lins for t in lin.tangents],
    )
    own = [lin.features_from_prefix(boundary) for lin in lins]
    grads_own = [
        g
        for k, (lin, (_, jvp)) in enumerate(zip(lins, own))
        for g in torch.autograd.grad((jvp * (k + 1)).sum(), list(lin.tangents))
    ]
    for (f_s, j_s), (f_o, j_o) in zip(shared, own):
        assert torch.allclose(f_s, f_o, atol=1e-6) and torch.allclose(j_s, j_o, atol=1e-5)
        assert j_s.abs().max() > 1e-3
    for g_s, g_o in zip(grads_shared, grads_own):
        assert torch.allclose(g_s, g_o, rtol=1e-5, atol=1e-5)


def test_a_diverging_member_leaves_the_other_training(monkeypatch, backbone, digits, joint_and_alone):
    logits_from_features = GradClassifier.logits_from_features

    def blows_up_after_a_step(self, features, jvp):
        logits = logits_from_features(self, features, jvp)
        return logits * float("nan") if self.training and self.global_step >= 3 else logits

    monkeypatch.setattr(GradClassifier, "logits_from_features", blows_up_after_a_step)
    cfg = make_cfg(epochs=2)
    grad, gradfeat = run_protocols(["grad", "gradfeat"], backbone, digits, cfg, progress=False)
    assert (grad.status, grad.value) == ("diverged", None)
    assert grad.reason == "adam, lr 0.001: training loss is nan at step 3; lower the learning rate " \
        "or check the inputs for NaN/Inf"
    assert gradfeat.status == "ok"
    assert gradfeat.value == pytest.approx(joint_and_alone[1][1].value, abs=TOLERANCE)


def test_a_failed_probe_fails_both_members(backbone, digits):
    images, labels = digits.train.tensors
    images = images.clone()
    images[5] = float("nan")
    poisoned = Splits("nan", TensorDataset(images, labels), digits.test, 10, "multiclass")
    results = run_protocols(["grad", "gradfeat"], backbone, poisoned, make_cfg(1), progress=False)
    for result in results:
        assert (result.status, result.value) == ("failed", None)
        assert result.reason.startswith("needs the linear probe, which failed")


def test_multilabel_members_report_their_own_map(backbone):
    data, cfg = make_splits("multilabel"), make_cfg(epochs=1)
    joint = run_protocols(["grad", "gradfeat"], backbone, data, cfg, progress=False)
    alone = [run_protocols([n], backbone, data, cfg, progress=False)[0] for n in ("grad", "gradfeat")]
    for shared, single in zip(joint, alone):
        assert shared.metric == "val_map" and shared.extra["trained_with"]
        assert shared.value == pytest.approx(single.value, abs=TOLERANCE)


def test_an_ablated_theta2_shares_the_pass_with_the_numbers_of_separate_runs(backbone, digits):
    """Table 1's random-θ2 rows: both members take the gradient term through the
    same re-initialised θ2 (one seed) and read the pretrained activations."""
    cfg = make_cfg(epochs=2)
    cfg.ABLATION.THETA2 = "random"
    joint = run_protocols(["grad", "gradfeat"], backbone, digits, cfg, progress=False)
    alone = [run_protocols([n], backbone, digits, cfg, progress=False)[0] for n in ("grad", "gradfeat")]
    assert joint[0].extra["trained_with"] == ["gradfeat"]
    for shared, single in zip(joint, alone):
        assert shared.status == single.status == "ok"
        assert shared.value == pytest.approx(single.value, abs=TOLERANCE)
        assert shared.extra["val_loss"] == pytest.approx(single.extra["val_loss"], abs=TOLERANCE)


@pytest.mark.parametrize("engine", ["dual", "func"])
def test_shared_features_of_an_ablated_theta2_are_the_pretrained_activations(backbone, engine):
    model, split = backbone.model, ["conv4"]
    lins = [linearized_from(model, split, engine=engine, random_theta2=True, seed=3)
            for _ in range(2)]
    plain = linearize(model, split, engine=engine)
    other_seed = linearized_from(model, split, engine=engine, random_theta2=True, seed=4)
    assert check_shared_expansion(lins)
    assert not check_shared_expansion([lins[0], plain])
    assert not check_shared_expansion([lins[0], other_seed])
    for lin, scale in zip(lins, (1.0, -3.0)):
        for t in lin.tangents:
            t.data = scale * torch.randn_like(t)
    boundary = lins[0].forward_prefix(torch.randn(6, 3, 16, 16))
    shared = joint_features_from_prefix(lins, boundary)
    with torch.no_grad():
        pretrained_f = plain.features_from_prefix(boundary)[0]
    for lin, (f_s, j_s) in zip(lins, shared):
        f_o, j_o = lin.features_from_prefix(boundary)
        assert torch.allclose(f_s, pretrained_f, atol=1e-6)
        assert torch.allclose(f_s, f_o, atol=1e-6) and torch.allclose(j_s, j_o, atol=1e-5)
        assert j_s.abs().max() > 1e-3
