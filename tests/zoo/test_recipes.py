"""Every pretraining recipe runs a tiny configuration, its loss falls, and it saves."""

from __future__ import annotations

import json

import pytest
import torch

from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.zoo import create_arch, metadata_path, pretrain
from gradfeat_plugin.zoo.recipes.rotation import rotate_batch


def tiny_cfg(samples: int = 64, batch_size: int = 16):
    cfg = get_cfg()
    cfg.PRETRAIN.MAX_SAMPLES = samples
    cfg.PRETRAIN.BATCH_SIZE = batch_size
    cfg.TRAINER.ACCELERATOR = "cpu"
    return cfg


@pytest.mark.parametrize(
    "method, arch",
    [
        ("rotation", "resnet_small"),
        ("bigan", "bigan_encoder_w32"),
        ("supervised", "resnet_small"),
        ("simclr", "resnet_small"),
    ],
)
def test_recipe_loss_falls_and_checkpoint_loads_safely(method, arch, tmp_path):
    out = tmp_path / "model.pth"
    meta = pretrain(
        method, "digits", arch, 4, str(out), seed=1, cfg=tiny_cfg(), progress=False
    )
    losses = meta["epoch_losses"]
    assert len(losses) == 4
    assert losses[-1] < 0.9 * losses[0], losses
    state = torch.load(out, weights_only=True)
    assert state.keys() == create_arch(arch).state_dict().keys()
    saved = json.loads((tmp_path / "model.json").read_text())
    assert saved["final_pretext_loss"] == losses[-1]
    expected = {
        "recipe": method,
        "dataset": "digits",
        "arch": arch,
        "epochs": 4,
        "seed": 1,
    }
    assert {k: saved[k] for k in expected} == expected
    assert saved["train_samples"] == 64 and saved["wall_time_s"] > 0


def test_recipes_are_deterministic_for_a_seed(tmp_path):
    def run(seed: int, name: str) -> dict:
        pretrain("rotation", "digits", "resnet_small", 1, str(tmp_path / name),
                 seed=seed, cfg=tiny_cfg(32), progress=False)  # fmt: skip
        return torch.load(tmp_path / name, weights_only=True)

    first, again, other = run(0, "a.pth"), run(0, "b.pth"), run(1, "c.pth")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(
        first["layer3.0.conv2.weight"], other["layer3.0.conv2.weight"]
    )


def test_rotations_are_exact_quarter_turns():
    image = torch.arange(4.0).view(1, 1, 2, 2)
    views, labels = rotate_batch(image)
    assert labels.tolist() == [0, 1, 2, 3]
    assert views[:, 0].flatten(1).tolist() == [
        [0, 1, 2, 3], [1, 3, 0, 2], [3, 2, 1, 0], [2, 0, 3, 1],
    ]  # fmt: skip


def test_bad_requests_are_user_errors_and_write_nothing(tmp_path):
    out = tmp_path / "x.pth"
    for method, dataset, arch, epochs, message in [
        ("jigsaw", "digits", "resnet_small", 1, "unknown method"),
        ("rotation", "mnist", "resnet_small", 1, "unknown dataset"),
        ("rotation", "digits", "resnet50", 1, "unknown arch"),
        ("rotation", "digits", "resnet_small", 0, "epochs"),
    ]:
        with pytest.raises(GradfeatError, match=message):
            pretrain(method, dataset, arch, epochs, str(out), cfg=tiny_cfg())
    assert list(tmp_path.iterdir()) == []
    assert metadata_path(str(out)) == str(tmp_path / "x.json")
