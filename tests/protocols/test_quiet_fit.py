"""A user's Trainer fitting a gradfeat model that fits its own probe prints
Lightning's lines once: the probe's inner Trainer adds no banner and no warning."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Two fits: with Lightning as imported, then with its rank-zero lines going to the
# logger of another Lightning package (the unified ``lightning`` claims them when it
# is imported last). Each fit prints its section name first.
SCRIPT = """
import logging, sys
import lightning_utilities.core.rank_zero as rank_zero
import torch
from pytorch_lightning import Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset
from gradfeat_plugin import GradfeatClassifier
from gradfeat_plugin.backbones.bigan import BiGANEncoder

images, labels = torch.randn(64, 3, 32, 32), torch.arange(64) % 10
loader = DataLoader(TensorDataset(images, labels), batch_size=32)
other = logging.getLogger("lightning.pytorch.utilities.rank_zero")
other.addHandler(logging.StreamHandler(sys.stderr))
other.setLevel(logging.INFO)
for section in ("as imported", "rerouted"):
    print(f"== {section}", file=sys.stderr, flush=True)
    if section == "rerouted":
        rank_zero.log = other
    seed_everything(0, verbose=False)
    model = GradfeatClassifier(BiGANEncoder(width=8), batch_size_per_device=32,
                               num_classes=10)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(model, loader, loader)
    print(f"probe fitted: {bool(model.prepared)}", file=sys.stderr, flush=True)
"""


@pytest.fixture(scope="module")
def user_fit() -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_the_inner_probe_fit_prints_nothing_of_its_own(user_fit):
    sections = user_fit.stderr.split("== ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["as imported", "rerouted"]
    for section in sections:
        assert "probe fitted: True" in section
        assert section.count("GPU available:") == 1, section
        assert section.count("`Trainer.fit` stopped") == 1, section
        assert "val_dataloader" not in section, section


def test_no_torch_jit_deprecation_from_forward_mode_ad(user_fit):
    # torch scripts its JVP decompositions when the linearisation first runs.
    assert "torch.jit.script" not in user_fit.stderr
