"""Config merging: defaults < YAML (with _BASE_) < flags < KEY VALUE; bad input is a user error."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin.config import CONFIG_DIR, get_cfg, load_config
from gradfeat_plugin.errors import GradfeatError

SHIPPED = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def test_get_cfg_returns_a_copy():
    cfg = get_cfg()
    cfg.TRAIN.LR = 5.0
    assert get_cfg().TRAIN.LR == 1e-3


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_merges(name):
    cfg = load_config(name)
    assert cfg.is_frozen()
    assert cfg.TRAIN.EPOCHS >= 1


def test_base_and_precedence(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("TRAIN:\n  EPOCHS: 7\n  LR: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "base.yaml"\nTRAIN:\n  LR: 0.25\n')
    cfg = load_config(str(child), ["TRAIN.SEED", "4"], {"TRAIN.LR": 0.125, "MODEL.SPEC": None})
    assert (cfg.TRAIN.EPOCHS, cfg.TRAIN.LR, cfg.TRAIN.SEED) == (7, 0.125, 4)
    assert cfg.MODEL.SPEC == get_cfg().MODEL.SPEC


def test_shipped_config_by_name_without_suffix():
    assert load_config("paper/bigan_cifar100").DATA.DATASET == "cifar100"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"opts": ["TRAIN.NOPE", "1"]}, "Non-existent key"),
        ({"opts": ["TRAIN.EPOCHS", "many"]}, "Type mismatch"),
        ({"opts": ["TRAIN.EPOCHS"]}, "KEY VALUE pairs"),
        ({"config_file": "missing.yaml"}, "not found"),
        ({"config_file": "evil.py"}, "must be YAML"),
    ],
)
def test_bad_configs_are_user_errors(kwargs, message):
    with pytest.raises(GradfeatError, match=message):
        load_config(**kwargs)


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN: [unclosed\n")
    with pytest.raises(GradfeatError, match="not valid YAML"):
        load_config(str(bad))


def test_dataset_defaults_are_shipped_for_the_embedded_data():
    from gradfeat_plugin.config import dataset_config

    assert load_config(dataset_config("mnist5k")).TRAIN.EPOCHS == 30
    assert dataset_config("cifar10") is None


@pytest.mark.parametrize(
    "name, split",
    [
        ("paper/bigan_cifar10", ["conv5"]),
        ("paper/bigan_cifar100", ["conv5"]),
        ("paper/bigan_svhn", ["conv5"]),
        ("paper/table1_bigan_cifar10_top1", ["conv5"]),
        ("paper/table1_bigan_cifar10_top2", ["conv4", "conv5"]),
        ("paper/table1_bigan_cifar10_top3", ["conv3", "conv4", "conv5"]),
    ],
)
def test_paper_bigan_configs_use_the_papers_encoder(name, split):
    from gradfeat_plugin.backbones.bigan import BiGANALIEncoder

    cfg = load_config(name)
    assert (cfg.MODEL.SPEC, list(cfg.MODEL.SPLIT)) == ("bigan_ali", split)
    modules = dict(BiGANALIEncoder().named_modules())
    assert all(isinstance(modules[s][0], torch.nn.Conv2d) for s in split)
