"""FINETUNE.FOLD_BN: fine-tuning trains the BN-folded θ2, as the authors' code does."""

from __future__ import annotations

import torch
from pytorch_lightning import Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from gradfeat_plugin.linearize import linearize
from gradfeat_plugin.protocols import FrozenOutputs, run_protocols

from .conftest import build, make_cfg


def _norms(module: nn.Module) -> list[str]:
    norm = nn.modules.batchnorm._BatchNorm
    return [n for n, m in module.named_modules() if isinstance(m, norm)]


def _folded_cfg():
    cfg = make_cfg(epochs=1)
    cfg.FINETUNE.FOLD_BN = True
    return cfg


def test_the_folded_theta2_has_no_batchnorm_and_starts_as_the_eval_model(backbone):
    seed_everything(0, verbose=False)
    folded = build("finetune", backbone.model, 10, _folded_cfg(), split=backbone.split)
    plain = build("finetune", backbone.model, 10, make_cfg(), split=backbone.split)
    assert folded.hparams["fold_bn"] is True and plain.hparams["fold_bn"] is False
    # θ2 (conv4) loses its BatchNorm; θ1's stay, frozen in eval mode; the backbone
    # handed in keeps all four.
    assert [n for n in _norms(plain.model.suffix) if n[:5] == "conv4"] == ["conv4.1"]
    assert not [n for n in _norms(folded.model.suffix) if n[:5] == "conv4"]
    assert _norms(folded.model.prefix) == _norms(plain.model.prefix) != []
    assert len(_norms(backbone.model)) == 4
    trained = {n for n, p in folded.model.suffix.named_parameters() if p.requires_grad}
    assert trained == {"conv4.0.weight", "conv4.0.bias"}
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone.model.eval()(x)
        start = folded.model.eval()(x)
        # In training mode too: nothing is left that reads batch statistics ...
        assert torch.allclose(folded.model.train()(x), start)
        # ... where the unfolded θ2 normalises with the batch's.
        assert not torch.allclose(plain.model.train()(x), expected, atol=1e-3)
    assert torch.allclose(start, expected, atol=1e-5)


def test_the_folded_theta2_trains_and_keeps_no_statistics(backbone, digits):
    seed_everything(0, verbose=False)
    module = build("finetune", backbone.model, 10, _folded_cfg(), cached=True,
                   split=backbone.split)
    before = {n: p.detach().clone() for n, p in module.model.suffix.named_parameters()}
    buffers = {n: b.clone() for n, b in module.model.suffix.named_buffers()}
    frozen = FrozenOutputs(linearize(backbone.model, backbone.split), batch_size=256)
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, limit_train_batches=3,
    )
    trainer.fit(module, DataLoader(frozen.boundary(digits.train), batch_size=64))
    after = dict(module.model.suffix.named_parameters())
    for name in ("conv4.0.weight", "conv4.0.bias"):
        assert not torch.equal(before[name], after[name])
    for name, buffer in module.model.suffix.named_buffers():
        assert torch.equal(buffer, buffers[name])


def test_a_run_fine_tunes_the_folded_theta2(backbone, digits):
    cfg = _folded_cfg()
    cfg.FINETUNE.HEAD_INIT = "random"
    (result,) = run_protocols(["finetune"], backbone, digits, cfg, progress=False)
    assert result.status == "ok" and result.value > 0.5
    assert result.trainable_params == 64 * 32 * 3 * 3 + 64 + 64 * 10 + 10


def test_a_folded_fine_tuning_reloads(tmp_path, backbone, digits):
    module = build("finetune", backbone.model, 10, _folded_cfg(), split=backbone.split)
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, limit_train_batches=2,
    )
    trainer.fit(module, DataLoader(digits.train, batch_size=64))
    path = tmp_path / "finetune.ckpt"
    trainer.save_checkpoint(path)
    reloaded = type(module).load_from_checkpoint(path, model=backbone.model,
                                                 weights_only=True)
    assert reloaded.hparams["fold_bn"] is True and not _norms(reloaded.model.suffix)
    images = torch.stack([x for x, _ in digits.test])[:16]
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(images), module.eval()(images))
