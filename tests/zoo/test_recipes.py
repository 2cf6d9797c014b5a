"""Every pretraining recipe runs a tiny configuration, its loss falls, and it saves."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gradfeat_plugin.backbones.bigan import BiGANALIEncoder
from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.zoo import create_arch, metadata_path, pretrain
from gradfeat_plugin.zoo.recipes.bigan import BiGANPretext
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


def test_bigan_parts_fit_the_papers_encoder():
    cfg = tiny_cfg()
    module = BiGANPretext(BiGANALIEncoder(), cfg)
    latent = cfg.PRETRAIN.BIGAN.LATENT_DIM
    to_latent = module.to_latent
    assert (to_latent.in_features, to_latent.out_features) == (512, latent)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    code = module.encode(images)
    fake = module.generator(torch.randn(4, latent))
    assert code.shape == (4, latent) and fake.shape == (4, 3, 32, 32)
    assert module.discriminator(images, code).shape == (4,)


def test_bigan_recipe_pretrains_the_papers_encoder(tmp_path):
    out = tmp_path / "ali.pth"
    # Two batches of 16: enough to move every weight, far too few to learn.
    meta = pretrain(
        "bigan", "digits", "bigan_ali", 1, str(out), seed=3, cfg=tiny_cfg(32),
        progress=False,
    )
    assert meta["train_samples"] == 32 and meta["gradfeat_split"] == "conv5"
    (loss,) = meta["epoch_losses"]
    # D's loss starts near 2·ln 2 (two chance-level cross-entropies).
    assert math.isfinite(loss) and 0 < loss < 4
    torch.manual_seed(3)
    initial = create_arch("bigan_ali").state_dict()
    trained = torch.load(out, weights_only=True)
    assert trained.keys() == initial.keys()
    # Two Adam steps move every weight by about the learning rate, no further.
    lr = tiny_cfg().PRETRAIN.BIGAN.LR
    for i in range(1, 6):
        weight = f"conv{i}.0.weight"
        step = (trained[weight] - initial[weight]).abs()
        assert (step > 0).float().mean() > 0.9, weight
        assert step.max() < 3 * lr, weight
    model = BiGANALIEncoder()
    model.load_state_dict(trained)
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
