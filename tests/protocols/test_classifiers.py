"""The lightly-shaped classifiers give run_protocols' numbers under a user's Trainer."""

from __future__ import annotations

import pytest
import torch
from lightly.utils.benchmarking import LinearClassifier
from pytorch_lightning import Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from gradfeat_plugin import (
    FinetuneClassifier,
    GradClassifier,
    GradfeatClassifier,
    run_protocols,
)

from .conftest import build, make_cfg

EPOCHS = 2


def _fit(module, digits, epochs=EPOCHS, **trainer_kwargs):
    """A Trainer as a lightly user builds one (sanity check, validation each epoch)."""
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, DataLoader(digits.train, batch_size=64, shuffle=True),
                DataLoader(digits.test, batch_size=64))
    return trainer, float(trainer.callback_metrics["val_top1"])


class SimCLRLike(nn.Module):
    """A lightly SSL module: backbone, projection head, forward returns features."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, x):
        return self.backbone(x).flatten(start_dim=1)


def test_same_numbers_as_run_protocols(backbone, digits, tmp_path):
    cfg = make_cfg(epochs=EPOCHS)
    reference = {r.protocol: r.value for r in run_protocols(
        ["grad", "gradfeat", "finetune"], backbone, digits, cfg, progress=False)}
    got = {}
    for name, cls in (("grad", GradClassifier), ("gradfeat", GradfeatClassifier),
                      ("finetune", FinetuneClassifier)):
        seed_everything(0)
        module = cls(backbone.model, batch_size_per_device=64, num_classes=10)
        got[name] = _fit(module, digits)[1]
    assert got == reference
    assert reference["gradfeat"] > 0.85 and reference["grad"] > 0.5


def test_whole_ssl_module_reloads_from_a_checkpoint(backbone, digits, tmp_path):
    seed_everything(0)
    whole = GradfeatClassifier(SimCLRLike(backbone.model), 64, lr=1e-3,
                               feature_dim=64, num_classes=10)
    assert whole.hparams["split"] == ["backbone.conv4"]
    trainer, value = _fit(whole, digits, epochs=1)
    seed_everything(0)
    direct = GradfeatClassifier(backbone.model, 64, num_classes=10)
    assert _fit(direct, digits, epochs=1)[1] == value
    path = tmp_path / "gradfeat.ckpt"
    trainer.save_checkpoint(path)
    reloaded = GradfeatClassifier.load_from_checkpoint(
        path, model=SimCLRLike(backbone.model), weights_only=True)
    assert bool(reloaded.prepared)
    metrics = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_checkpointing=False).validate(
        reloaded, DataLoader(digits.test, batch_size=64), verbose=False)
    assert metrics[0]["val_top1"] == pytest.approx(value)


def test_a_lightly_probe_and_plain_hyperparameters(backbone, digits):
    seed_everything(0)
    probe = LinearClassifier(backbone.model, batch_size_per_device=64, lr=0.1,
                             feature_dim=64, num_classes=10, topk=(1,))
    _, probe_value = _fit(probe, digits, epochs=1)
    # With w2 = 0 and nothing trained (lr 0), gradfeat is exactly lightly's probe,
    # rewritten for standardised features.
    frozen = GradfeatClassifier(backbone.model, 64, lr=0.0, num_classes=10, probe=probe)
    assert _fit(frozen, digits, epochs=1)[1] == pytest.approx(probe_value, abs=1e-6)
    assert probe_value > 0.5
    with pytest.raises(ValueError, match="feature_dim=2048 but the model's features have 64"):
        GradfeatClassifier(backbone.model, 64, feature_dim=2048, num_classes=10)
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentun'"):
        FinetuneClassifier(backbone.model, 64, num_classes=10, momentun=0.9)
    sgd = FinetuneClassifier(backbone.model, 64, lr=0.01, num_classes=10,
                             optimizer="sgd", weight_decay=1e-4)
    optimizer = sgd.build_optimizer(list(sgd.parameters()), 0.01)
    assert (type(optimizer).__name__, optimizer.defaults["weight_decay"]) == ("SGD", 1e-4)
    assert sgd.hparams["weight_decay"] == 1e-4
    plain = (int, float, str, bool, list, type(None))
    assert all(isinstance(v, plain) for v in sgd.hparams.values())


def _metric(metrics, name: str) -> float:
    """``name`` among Lightning's metrics (kNN's carry a dataloader suffix)."""
    return next(float(v) for k, v in metrics.items() if k.split("/")[0] == name)


@pytest.mark.parametrize("name", ["linear", "grad", "gradfeat", "finetune", "knn"])
def test_every_protocol_reloads_from_its_checkpoint(name, backbone, digits, tmp_path):
    cfg = make_cfg(epochs=1)
    seed_everything(0)
    # kNN takes neither (lightly's KNNClassifier arguments).
    extra = {} if name == "knn" else dict(split=backbone.split, batch_size_per_device=64)
    module = build(name, backbone.model, 10, cfg, **extra)
    plain = (int, float, str, bool, list, type(None))
    assert all(isinstance(v, plain) for v in module.hparams.values()), module.hparams
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    train = DataLoader(digits.train, batch_size=64)
    test = DataLoader(digits.test, batch_size=64)
    if name == "knn":
        loaders = [train, test]
        metric = "val_knn_top1"
        trainer.validate(module, loaders, verbose=False)
    else:
        if name in ("grad", "gradfeat"):
            module.set_probe(torch.randn(10, 64) * 0.1, torch.zeros(10))
        loaders, metric = test, "val_top1"
        trainer.fit(module, train, test)
    value = _metric(trainer.callback_metrics, metric)
    assert value > 0.2  # chance is 0.1
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    reloaded = type(module).load_from_checkpoint(path, model=backbone.model,
                                                 weights_only=True)
    assert dict(reloaded.hparams) == dict(module.hparams)
    metrics = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_checkpointing=False).validate(reloaded, loaders, verbose=False)
    assert _metric(metrics[-1], metric) == pytest.approx(value, abs=1e-6)
