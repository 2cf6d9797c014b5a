"""What each protocol trains, and what it must leave bit-identical."""

from __future__ import annotations

import torch
from pytorch_lightning import Callback, Trainer, seed_everything
from torch.utils.data import DataLoader

from gradfeat_plugin.linearize import linearize
from gradfeat_plugin.protocols import FrozenOutputs

from .conftest import build


def _trainer(epochs: int = 1, callbacks: list[Callback] | None = None) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def _frozen(backbone):
    return FrozenOutputs(linearize(backbone.model, backbone.split), batch_size=256)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_gradfeat_with_zero_w2_is_the_linear_probe_exactly(backbone, digits, cfg):
    seed_everything(0, verbose=False)
    frozen = _frozen(backbone)
    probe = build("linear", backbone.model, 10, cfg, cached=True, split=backbone.split)
    _trainer().fit(probe, DataLoader(frozen.features(digits.train), batch_size=64))
    gradfeat = build("gradfeat", backbone.model, 10, cfg, cached=True)
    gradfeat.set_probe(*probe.probe())

    features = frozen.features(digits.test).inputs
    boundary = frozen.boundary(digits.test).inputs
    with torch.no_grad():
        expected = probe(features)
        assert torch.equal(gradfeat(boundary), expected)
        # The uncached path (images in) agrees to rounding.
        images = torch.stack([x for x, _ in digits.test])
        from_images = build("gradfeat", backbone.model, 10, cfg, split=backbone.split)
        from_images.set_probe(*probe.probe())
        assert torch.allclose(from_images(images), expected, atol=1e-5)


def _fit_on_boundary(module, backbone, digits, callbacks=None):
    frozen = _frozen(backbone)
    loader = DataLoader(frozen.boundary(digits.train), batch_size=64, shuffle=True)
    _trainer(callbacks=callbacks).fit(module, loader)


def test_grad_and_gradfeat_train_only_w1_and_w2(backbone, digits, cfg):
    weight, bias = torch.randn(10, backbone.num_features) * 0.1, torch.zeros(10)
    for name, trained in [
        ("grad", {"bias"}),
        ("gradfeat", {"weight", "bias"}),
    ]:
        # The head is w1 (+ bias); lightly's classification_head is the same module.
        heads = ("model.head", "classification_head")
        trained = {f"{m}.{p}" for m in heads for p in trained}
        seed_everything(0, verbose=False)
        module = build(name, backbone.model, 10, cfg, cached=True, split=backbone.split)
        module.set_probe(weight, bias)
        before = _snapshot(module)
        _fit_on_boundary(module, backbone, digits)
        after = _snapshot(module)
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        tangents = {k for k in before if k.startswith("model.tangents.")}
        assert tangents and tangents <= changed
        assert changed == trained | tangents, name
        assert torch.equal(after["model.probe_weight"], weight)


def test_finetune_changes_theta2_and_leaves_theta1(backbone, digits, cfg):
    seed_everything(0, verbose=False)
    module = build("finetune", backbone.model, 10, cfg, cached=True)
    before = _snapshot(module)
    _fit_on_boundary(module, backbone, digits)
    after = _snapshot(module)
    theta1 = [k for k in before if k.startswith("model.prefix.")]
    theta2 = [k for k in before if k.startswith("model.suffix.conv4.")]
    theta2 = [k for k in theta2 if k.endswith("weight")]
    assert theta1 and theta2
    assert all(torch.equal(before[k], after[k]) for k in theta1)
    assert all(not torch.equal(before[k], after[k]) for k in theta2)
    assert not module.model.prefix.training
    # The original backbone is never modified.
    original = backbone.model.conv4[0].weight
    assert torch.equal(original, before["model.suffix.conv4.0.weight"])


class _LearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_paper_optimiser_and_quarterly_halving(backbone, digits, cfg):
    module = build("linear", backbone.model, 10, cfg, cached=True, split=backbone.split)
    lrs = _LearningRates()
    frozen = _frozen(backbone)
    _trainer(epochs=2, callbacks=[lrs]).fit(
        module, DataLoader(frozen.features(digits.train), batch_size=50)
    )
    optimizer = module.trainer.optimizers[0]
    assert type(optimizer).__name__ == "Adam"
    assert optimizer.defaults["betas"] == (0.5, 0.999)
    assert optimizer.defaults["weight_decay"] == 1e-6
    # 2 epochs x 28 steps = 56 steps: four quarters of 14 steps.
    assert len(lrs.lrs) == 56
    expected = [1e-3 * 0.5 ** (step // 14) for step in range(56)]
    assert lrs.lrs == expected
