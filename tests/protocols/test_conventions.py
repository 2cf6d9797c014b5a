"""The authors' conventions as switches: an NTK-parametrised w1 head, a gradient
baseline without bias, per-protocol learning rates, gradient clipping, the linear
probe's own settings and features left unstandardised."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_lightning import Callback, Trainer, seed_everything
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from gradfeat_plugin.config import load_config
from gradfeat_plugin.linearize import NTKLinear, linearize
from gradfeat_plugin.protocols import (
    CachedInputs,
    FrozenOutputs,
    GradfeatClassifier,
    LinearProbeClassifier,
    build_optimizer,
    get_protocol_class,
    run_protocols,
)
from gradfeat_plugin.protocols._base import ProtocolClassifier

from .conftest import build, make_cfg


def _trainer(callbacks=(), batches: int | None = None) -> Trainer:
    return Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
        callbacks=list(callbacks), limit_train_batches=batches,
    )


@pytest.fixture(scope="module")
def frozen(backbone):
    return FrozenOutputs(linearize(backbone.model, backbone.split), batch_size=256)


def _ntk_cfg(**train):
    cfg = make_cfg()
    cfg.MODEL.NTK_HEAD = True
    for key, value in train.items():
        cfg.TRAIN[key] = value
    return cfg


def test_ntk_head_is_a_plain_head_with_rescaled_parameters():
    torch.manual_seed(0)
    head, x = NTKLinear(64, 10), torch.randn(5, 64)
    assert head.weight_scale == math.sqrt(1 / 10) and head.bias_scale == math.sqrt(0.1)
    plain = nn.Linear(64, 10)
    with torch.no_grad():
        plain.weight.copy_(head.weight * math.sqrt(1 / 10))
        plain.bias.copy_(head.bias * math.sqrt(0.1))
    assert torch.equal(head(x), plain(x))
    # It starts where nn.Linear starts: only the optimiser's steps differ.
    torch.manual_seed(1)
    fresh = NTKLinear(64, 10)
    torch.manual_seed(1)
    reference = nn.Linear(64, 10)
    assert torch.allclose(fresh.effective_weight(), reference.weight, rtol=1e-6, atol=0)
    assert torch.allclose(fresh.effective_bias(), reference.bias, rtol=1e-6, atol=0)
    # An effective weight read from one NTK head is reproduced exactly by another.
    other = NTKLinear(64, 10)
    for _ in range(20):
        with torch.no_grad():
            head.weight.normal_().mul_(7.0)
            head.bias.normal_()
        other.set_effective(head.effective_weight(), head.effective_bias())
        assert torch.equal(other(x), head(x))
    # A weight whose effective value 0.25 does not come back from 0.25 / √(1/7).
    seven, again = NTKLinear(1, 7), NTKLinear(1, 7)
    with torch.no_grad():
        seven.weight.fill_(0.6614378690719604)
    assert torch.equal(seven.effective_weight(), torch.full((7, 1), 0.25))
    quarter = torch.tensor(0.25)
    assert not torch.equal(quarter / seven.weight_scale * seven.weight_scale, quarter)
    again.set_effective(seven.effective_weight(), seven.effective_bias())
    assert torch.equal(again.effective_weight(), seven.effective_weight())


def test_gradfeat_with_an_ntk_head_starts_at_the_probe_exactly(
    backbone, digits, frozen
):
    cfg = _ntk_cfg()
    seed_everything(0, verbose=False)
    probe = build("linear", backbone.model, 10, cfg, cached=True, split=backbone.split)
    assert isinstance(probe.classification_head, NTKLinear)
    _trainer().fit(probe, DataLoader(frozen.features(digits.train), batch_size=64))
    weight, bias = probe.probe()
    head = probe.classification_head
    assert torch.equal(weight, head.weight * math.sqrt(1 / 10))
    assert torch.equal(bias, head.bias * math.sqrt(0.1))
    gradfeat = build("gradfeat", backbone.model, 10, cfg, cached=True,
                     split=backbone.split)
    gradfeat.set_probe(weight, bias)
    assert isinstance(gradfeat.model.head, NTKLinear)
    # ω̄ is the effective weight; the JVP term reads it.
    assert torch.equal(gradfeat.model.probe_weight, weight)
    features = frozen.features(digits.test).inputs
    boundary = frozen.boundary(digits.test).inputs
    with torch.no_grad():
        assert torch.equal(gradfeat(boundary), probe(features))


def _one_adam_step(head_is_ntk: bool, backbone, features, labels, start):
    cfg = _ntk_cfg() if head_is_ntk else make_cfg()
    module = build("linear", backbone.model, 10, cfg, cached=True, split=backbone.split)
    head = module.classification_head
    if head_is_ntk:
        head.set_effective(*start)
    else:
        with torch.no_grad():
            head.weight.copy_(start[0])
            head.bias.copy_(start[1])
    before = module(features)
    optimizer = build_optimizer("adam", module.get_trainable_parameters(), 1e-3)
    F.cross_entropy(before, labels).backward()
    optimizer.step()
    with torch.no_grad():
        return before.detach(), module(features)


def test_ntk_head_takes_other_adam_steps(backbone, digits, frozen):
    data = frozen.features(digits.train)
    features, labels = data.inputs[:64], torch.stack([y for _, y in digits.train])[:64]
    torch.manual_seed(0)
    start = (torch.randn(10, backbone.num_features) * 0.1, torch.randn(10) * 0.1)
    plain_before, plain_after = _one_adam_step(False, backbone, features, labels, start)
    ntk_before, ntk_after = _one_adam_step(True, backbone, features, labels, start)
    # The same function before the step ...
    assert torch.allclose(plain_before, ntk_before, atol=1e-5)
    # ... but Adam's first step moves each raw parameter by about lr, so the NTK
    # head's effective weights move √(1/10) and its biases √0.1 as far.
    plain_change = (plain_after - plain_before).abs().mean()
    ntk_change = (ntk_after - ntk_before).abs().mean()
    assert plain_change > 1e-3
    assert 0.2 < ntk_change / plain_change < 0.45


def test_grad_without_bias_trains_no_bias_and_starts_at_zero(backbone, digits, frozen):
    cfg = make_cfg()
    cfg.GRAD.BIAS = False
    weight, bias = torch.randn(10, backbone.num_features) * 0.1, torch.ones(10)
    boundary = frozen.boundary(digits.test).inputs
    with_bias = build("grad", backbone.model, 10, make_cfg(), cached=True,
                      split=backbone.split)
    with_bias.set_probe(weight, bias)
    seed_everything(0, verbose=False)
    module = build("grad", backbone.model, 10, cfg, cached=True, split=backbone.split)
    module.set_probe(weight, bias)
    with torch.no_grad():
        assert torch.equal(with_bias(boundary), bias.expand(len(boundary[0]), 10))
        assert torch.equal(module(boundary), torch.zeros(len(boundary[0]), 10))
    trainable = module.get_trainable_parameters()
    assert all(p is not module.model.head.bias for p in trainable)
    tangents = sum(t.numel() for t in module.model.tangents)
    assert module.num_trainable_parameters() == tangents
    head_before = module.model.head.bias.detach().clone()
    _trainer(batches=3).fit(
        module, DataLoader(frozen.boundary(digits.train), batch_size=64, shuffle=True)
    )
    assert torch.equal(module.model.head.bias, head_before)
    assert any(t.abs().max() > 0 for t in module.model.tangents)
    with torch.no_grad():
        assert module(boundary).abs().max() > 0


class _Seen(Callback):
    """The optimiser of the first step and the gradient norm before and after the
    clipping of that step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer = optimizer
        self.before = _grad_norm(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after = _grad_norm(pl_module)
        trainer.should_stop = True


def _grad_norm(module) -> float:
    grads = [p.grad for p in module.get_trainable_parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def _repo_cfg():
    cfg = load_config("paper/conventions_authors_repo").clone()
    cfg.defrost()
    cfg.TRAINER.ACCELERATOR = "cpu"
    return cfg


@pytest.mark.parametrize(
    "name, cache, lr, weight_decay, clip",
    [
        ("linear", "features", 0.01, 1e-6, 10.0),
        ("grad", "boundary", 0.1, 5e-5, 10.0),
        ("gradfeat", "boundary", 0.1, 5e-5, 10.0),
        ("finetune", "boundary", 0.001, 5e-5, 10.0),
    ],
)
def test_authors_optimiser_reaches_each_protocol(backbone, digits, frozen, name, cache,
                                                 lr, weight_decay, clip):
    cfg = _repo_cfg()
    seed_everything(0, verbose=False)
    module = build(name, backbone.model, 10, cfg, cached=True, split=backbone.split)
    if get_protocol_class(name).needs_probe:
        module.set_probe(torch.randn(10, backbone.num_features), torch.zeros(10))
    data = getattr(frozen, cache)(digits.train)
    # Inputs scaled up so that the first gradient is far above the clipping norm.
    inputs = [t * 50 for t in data.inputs] if cache == "boundary" else data.inputs * 50
    seen = _Seen()
    loader = DataLoader(CachedInputs(inputs, data.targets), batch_size=128)
    _trainer([seen], batches=1).fit(module, loader)
    group = seen.optimizer.param_groups[0]
    assert type(seen.optimizer).__name__ == "SGD"
    assert (group["initial_lr"], group["momentum"]) == (lr, 0.9)
    assert group["weight_decay"] == weight_decay
    assert module.clip_grad_norm() == clip
    assert seen.before > 2 * clip
    assert seen.after == pytest.approx(clip, rel=1e-4)


def test_without_clipping_the_gradient_is_left_alone(backbone, digits, frozen):
    cfg = _repo_cfg()
    cfg.TRAIN.CLIP_GRAD_NORM = 0.0
    module = build("linear", backbone.model, 10, cfg, cached=True, split=backbone.split)
    data = frozen.features(digits.train)
    seen = _Seen()
    loader = DataLoader(CachedInputs(data.inputs * 50, data.targets), batch_size=128)
    _trainer([seen], batches=1).fit(module, loader)
    assert seen.after == seen.before > 20


def _recording(monkeypatch):
    """Each trained module with its optimiser, scheduler and epochs, as a run's
    Trainer configures it."""
    seen: dict[str, tuple] = {}
    configure = ProtocolClassifier.configure_optimizers

    def record(self):
        optimizers, schedulers = configure(self)
        scheduler = schedulers[0]["scheduler"]
        seen[type(self).__name__] = (self, optimizers[0], scheduler, self.trainer)
        return optimizers, schedulers

    monkeypatch.setattr(ProtocolClassifier, "configure_optimizers", record)
    return seen


def test_the_probe_trains_with_its_own_settings(monkeypatch, backbone, digits):
    """LINEAR.* reach the linear probe's optimiser, head, schedule and length, and
    leave grad's and gradfeat's alone; ω̄ is the plain probe's weight."""
    cfg = _repo_cfg()
    cfg.TRAIN.EPOCHS, cfg.LINEAR.EPOCHS = 1, 2
    seen = _recording(monkeypatch)
    linear, grad, gradfeat = run_protocols(["linear", "grad", "gradfeat"], backbone,
                                           digits, cfg, progress=False)
    assert (linear.epochs, grad.epochs, gradfeat.epochs) == (2, 1, 1)
    steps = math.ceil(len(digits.train) / cfg.TRAIN.BATCH_SIZE)
    probe, optimizer, scheduler, trainer = seen["LinearProbeClassifier"]
    head = probe.classification_head
    assert type(head) is nn.Linear  # LINEAR.NTK_HEAD False under MODEL.NTK_HEAD True
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"]) == (0.01, 1e-6)
    assert trainer.max_epochs == 2 and trainer.global_step == 2 * steps
    assert scheduler.step_size == round(2 * steps * 0.25)
    for name, step_fraction in (("GradClassifier", 0.2), ("GradfeatClassifier", 0.2)):
        module, optimizer, scheduler, trainer = seen[name]
        assert isinstance(module.model.head, NTKLinear)
        group = optimizer.param_groups[0]
        assert (group["initial_lr"], group["weight_decay"]) == (0.1, 5e-5)
        assert trainer.max_epochs == 1 and trainer.global_step == steps
        assert scheduler.step_size == round(steps * step_fraction)
        assert torch.equal(module.model.probe_weight, head.weight)


def test_gradfeat_fits_its_own_probe_with_the_probe_settings(monkeypatch, backbone,
                                                             digits):
    """Without a probe given, gradfeat fits ω̄ as the run would: LINEAR.*."""
    cfg = _repo_cfg()
    cfg.LINEAR.EPOCHS = 2
    seen = _recording(monkeypatch)
    seed_everything(0, verbose=False)
    module = build("gradfeat", backbone.model, 10, cfg, split=backbone.split)
    loader = DataLoader(digits.train, batch_size=128, shuffle=True)
    _trainer(batches=1).fit(module, loader)
    probe, optimizer, scheduler, trainer = seen["LinearProbeClassifier"]
    assert type(probe.classification_head) is nn.Linear
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"]) == (0.01, 1e-6)
    steps = math.ceil(len(digits.train) / 128)
    assert trainer.max_epochs == 2 and trainer.global_step == 2 * steps
    assert scheduler.step_size == round(2 * steps * 0.25)
    assert torch.equal(module.model.probe_weight, probe.classification_head.weight)


def test_without_standardisation_the_features_reach_the_heads_raw(
    monkeypatch, backbone, digits
):
    cfg = _repo_cfg()
    cfg.TRAIN.EPOCHS = cfg.LINEAR.EPOCHS = 1
    standardized = []
    monkeypatch.setattr(
        ProtocolClassifier, "set_standardization",
        lambda self, mean, std: standardized.append(type(self).__name__),
    )
    heard = {}
    linear_forward = LinearProbeClassifier.forward
    logits_from_features = GradfeatClassifier.logits_from_features

    def linear_head_input(self, inputs):
        heard["linear"] = self.model.standardize(inputs)
        return linear_forward(self, inputs)

    def gradfeat_head_input(self, features, jvp):
        heard["gradfeat"] = features
        return logits_from_features(self, features, jvp)

    monkeypatch.setattr(LinearProbeClassifier, "forward", linear_head_input)
    monkeypatch.setattr(GradfeatClassifier, "logits_from_features", gradfeat_head_input)
    results = run_protocols(["linear", "gradfeat"], backbone, digits, cfg,
                            progress=False)
    assert [r.status for r in results] == ["ok", "ok"]
    assert standardized == []
    # The last batch the heads read: the end of the test split, as the network
    # computes it, not centred or scaled.
    images = torch.stack([x for x, _ in digits.test])
    with torch.no_grad():
        raw = backbone.model.eval()(images)
    for name in ("linear", "gradfeat"):
        last = heard[name]
        assert torch.allclose(last, raw[-len(last):], atol=1e-5), name
