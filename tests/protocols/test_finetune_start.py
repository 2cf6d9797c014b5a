"""Fine-tuning starts from the chosen probe, and a run whose number means nothing
is stored as failed with its reason."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin.protocols import FinetuneClassifier, run_protocols
from gradfeat_plugin.protocols import run as run_module
from gradfeat_plugin.protocols.run import below_within_noise

from .conftest import make_cfg


def test_the_head_starts_from_the_probe_with_its_standardisation_folded_in(
    monkeypatch, backbone, digits
):
    started = {}
    set_probe = FinetuneClassifier.set_probe

    def record(self, weight, bias=None):
        started["head"] = (weight.clone(), bias.clone())
        set_probe(self, weight, bias)

    monkeypatch.setattr(FinetuneClassifier, "set_probe", record)
    cfg = make_cfg(epochs=2)
    cfg.FINETUNE.HEAD_INIT = "probe"
    linear, finetune = run_protocols(["linear", "finetune"], backbone, digits, cfg,
                                     progress=False)
    assert finetune.status == "ok" and finetune.value >= linear.value
    # The probe read standardised features; the fine-tuning head reads raw ones and
    # must compute the probe's function on them.
    images = torch.stack([x for x, _ in digits.test])
    with torch.no_grad():
        features = backbone.model.eval()(images)
    weight, bias = started["head"]
    raw_logits = features @ weight.T + bias
    cfg.TRAIN.EPOCHS = 2
    (again,) = run_protocols(["linear"], backbone, digits, cfg, progress=False)
    predicted = raw_logits.argmax(1)
    labels = torch.tensor([y for _, y in digits.test])
    assert float((predicted == labels).float().mean()) == pytest.approx(again.value, abs=1e-6)


def test_a_finetune_run_at_chance_is_failed_not_a_number(backbone, digits):
    cfg = make_cfg(epochs=1)
    cfg.TRAIN.LR_BY_PROTOCOL.FINETUNE = 1e-12  # nothing moves: the random head stays
    (finetune,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert (finetune.status, finetune.value) == ("failed", None)
    assert "stays at chance" in finetune.reason


def test_a_finetune_run_below_its_start_is_failed(monkeypatch, backbone, digits):
    forward = FinetuneClassifier.forward

    def half_wrong(self, images):
        logits = forward(self, images)
        if self.training:
            return logits
        # Every other prediction moved to the next class: about half the accuracy.
        logits = logits.clone()
        logits[1::2] = logits[1::2].roll(1, dims=1)
        return logits

    monkeypatch.setattr(FinetuneClassifier, "forward", half_wrong)
    cfg = make_cfg(epochs=2)
    cfg.FINETUNE.HEAD_INIT = "probe"
    cfg.TRAIN.LR = 0.01
    linear, finetune = run_protocols(["linear", "finetune"], backbone, digits, cfg,
                                     progress=False)
    assert linear.status == "ok" and linear.value > 0.6
    assert (finetune.status, finetune.value) == ("failed", None)
    assert "ends below the linear probe it started from" in finetune.reason
    # No validation split: both were scored on the test split, whose size sets the noise.
    assert f"%, {len(digits.test)} images)" in finetune.reason
    # A drop the noise of the split explains keeps the run.
    monkeypatch.setattr(run_module, "below_within_noise", lambda start, value, n: True)
    (_, kept) = run_protocols(["linear", "finetune"], backbone, digits, cfg, progress=False)
    assert kept.status == "ok" and kept.value < linear.value
    cfg.FINETUNE.HEAD_INIT = "random"  # no start to fall below: a number, footnoted
    (finetune,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert finetune.status == "ok" and finetune.value < linear.value


class _WithDeadFeature(torch.nn.Module):
    """The backbone's features and one that is always 0 (a dead ReLU unit)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        features = self.inner(x)
        return torch.cat([features, torch.zeros_like(features[:, :1])], dim=1)


def test_a_constant_feature_does_not_break_the_start(backbone, digits):
    from .conftest import TinyBackbone

    dead = TinyBackbone(_WithDeadFeature(backbone.model).eval(), ["inner.conv4"], 65)
    cfg = make_cfg(epochs=1)
    cfg.FINETUNE.HEAD_INIT = "probe"
    linear, finetune = run_protocols(["linear", "finetune"], dead, digits, cfg,
                                     progress=False)
    assert linear.status == "ok"
    assert finetune.status == "ok", finetune.reason


@pytest.mark.parametrize("head_init, zero", [("zero", True), ("random", False)])
def test_a_zero_head_starts_at_zero_and_a_random_one_does_not(backbone, head_init, zero):
    model = FinetuneClassifier(backbone.model, 16, num_classes=10, head_init=head_init)
    head = model.classification_head
    assert (float(head.weight.abs().max()) == 0.0) is zero
    assert (float(head.bias.abs().max()) == 0.0) is zero
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    # A zero head gives every class the same logit: a uniform start.
    assert (float(logits.std(dim=1).max()) == 0.0) is zero


def test_an_unknown_head_start_is_refused(backbone):
    with pytest.raises(ValueError, match="head_init must be one of random, zero, probe"):
        FinetuneClassifier(backbone.model, 16, num_classes=10, head_init="ones")


@pytest.mark.parametrize(
    ("start", "value", "images", "within"),
    [
        (1.0, 0.9, 10, True),  # one of 10 validation images: margin 19 %
        (1.0, 0.7, 10, False),  # margin 29 %
        (0.95, 0.92, 400, True),  # margin 3.5 %
        (0.95, 0.9, 400, False),  # margin 3.7 %
        (0.9, 0.9, 0, True),  # not below at all
        (0.9, 0.89, 0, False),  # nothing scored: no noise to excuse it
    ],
)
def test_a_drop_is_excused_only_within_two_standard_errors(start, value, images, within):
    assert below_within_noise(start, value, images) is within
