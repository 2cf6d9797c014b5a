"""The paper-conventions presets and the switches they set: each loads, validates
and carries the authors' values; a bad switch value is one ``error:`` line, status 2."""

from __future__ import annotations

import pytest

from gradfeat_plugin.cli import main_guard
from gradfeat_plugin.config import get_cfg, load_config
from gradfeat_plugin.config.validate import validate_config
from gradfeat_plugin.errors import GradfeatError


def test_defaults_keep_the_plain_conventions():
    cfg = get_cfg()
    assert (cfg.MODEL.NTK_HEAD, cfg.GRAD.BIAS) == (False, True)
    assert cfg.TRAIN.CLIP_GRAD_NORM == 0
    assert all(lr is None for lr in cfg.TRAIN.LR_BY_PROTOCOL.values())
    assert all(value is None for value in cfg.LINEAR.values())
    assert cfg.TRAIN.STANDARDIZE_FEATURES is True
    assert (cfg.FINETUNE.FOLD_BN, cfg.ABLATION.INIT) == (False, "default")


def test_paper_text_preset():
    cfg = load_config("paper/conventions")
    assert cfg.MODEL.NTK_HEAD and cfg.MODEL.NTK and cfg.MODEL.FOLD_BN
    assert cfg.GRAD.BIAS is False
    assert (cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR) == ("adam", 1e-3)
    assert cfg.TRAIN.BATCH_SIZE == 64
    assert tuple(cfg.ADAM.BETAS) == (0.5, 0.999)
    assert (cfg.TRAIN.LR_DECAY, cfg.TRAIN.LR_DECAY_EVERY) == (0.5, 0.25)
    assert cfg.TRAIN.CLIP_GRAD_NORM == 0


def test_authors_repository_preset():
    cfg = load_config("paper/conventions_authors_repo")
    assert cfg.MODEL.NTK_HEAD and cfg.GRAD.BIAS is False
    assert (cfg.TRAIN.OPTIMIZER, cfg.SGD.MOMENTUM) == ("sgd", 0.9)
    assert cfg.SGD.WEIGHT_DECAY == 5e-5
    assert cfg.TRAIN.LR == 0.1  # gradfeat and grad
    by_protocol = cfg.TRAIN.LR_BY_PROTOCOL
    assert (by_protocol.LINEAR, by_protocol.FINETUNE) == (0.01, 0.001)
    assert by_protocol.GRAD is None and by_protocol.GRADFEAT is None
    assert cfg.TRAIN.BATCH_SIZE == 128
    # 50K iterations at batch 128 on CIFAR-10's 50K images, halved every 10K.
    assert cfg.TRAIN.EPOCHS * 50_000 // cfg.TRAIN.BATCH_SIZE == 50_000
    assert (cfg.TRAIN.LR_DECAY, cfg.TRAIN.LR_DECAY_EVERY) == (0.5, 0.2)
    assert cfg.TRAIN.CLIP_GRAD_NORM == cfg.FINETUNE.CLIP_GRAD_NORM == 10
    assert list(cfg.FINETUNE.OPTIMIZERS) == ["sgd"]
    # Their probe: a plain head, weight decay 1e-6, 80K iterations halved every 20K.
    assert cfg.LINEAR.NTK_HEAD is False and cfg.LINEAR.WEIGHT_DECAY == 1e-6
    assert (cfg.LINEAR.EPOCHS, cfg.LINEAR.LR_DECAY_EVERY) == (205, 0.25)
    assert cfg.TRAIN.STANDARDIZE_FEATURES is False and cfg.DATA.VAL_FRACTION == 0
    assert cfg.FINETUNE.FOLD_BN is True and cfg.ABLATION.INIT == "ntk"


def test_paper_configs_build_on_the_presets():
    table3 = load_config("paper/bigan_cifar10")
    assert table3.MODEL.NTK_HEAD and not table3.GRAD.BIAS
    assert (table3.TRAIN.OPTIMIZER, table3.TRAIN.EPOCHS) == ("adam", 102)
    assert load_config("paper/table1_bigan_cifar10_top2").MODEL.NTK_HEAD
    repo = load_config("paper/bigan_cifar10_authors_repo")
    assert (repo.MODEL.SPEC, list(repo.MODEL.SPLIT)) == ("bigan_ali", ["conv5"])
    assert (repo.TRAIN.OPTIMIZER, repo.TRAIN.LR_BY_PROTOCOL.LINEAR) == ("sgd", 0.01)


def test_a_protocol_lr_from_the_command_line():
    cfg = load_config(opts=["TRAIN.LR_BY_PROTOCOL.GRADFEAT", "0.05"])
    assert cfg.TRAIN.LR_BY_PROTOCOL.GRADFEAT == 0.05


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("MODEL.NTK_HEAD", "1", "for config key: MODEL.NTK_HEAD"),
        ("GRAD.BIAS", "'no'", "for config key: GRAD.BIAS"),
        ("TRAIN.CLIP_GRAD_NORM", "-1.0", "TRAIN.CLIP_GRAD_NORM must be a finite"),
        ("FINETUNE.CLIP_GRAD_NORM", "1e400", "CLIP_GRAD_NORM must be a finite"),
        ("TRAIN.LR_BY_PROTOCOL.LINEAR", "0.0", "TRAIN.LR_BY_PROTOCOL.LINEAR must be"),
        ("TRAIN.LR_BY_PROTOCOL.GRAD", "'fast'", "LR_BY_PROTOCOL.GRAD must be a number"),
        ("TRAIN.LR_BY_PROTOCOL.KNN", "0.1", "Non-existent key"),
        ("FINETUNE.FOLD_BN", "1", "for config key: FINETUNE.FOLD_BN"),
        ("LINEAR.NTK_HEAD", "1", "LINEAR.NTK_HEAD must be True or False"),
        ("LINEAR.WEIGHT_DECAY", "-1e-6", "LINEAR.WEIGHT_DECAY must be a finite"),
        ("LINEAR.WEIGHT_DECAY", "'none'", "LINEAR.WEIGHT_DECAY must be a number"),
        ("LINEAR.EPOCHS", "0", "LINEAR.EPOCHS must be at least 1"),
        ("LINEAR.EPOCHS", "2.5", "LINEAR.EPOCHS must be an integer"),
        ("LINEAR.LR_DECAY_EVERY", "0.0", "LINEAR.LR_DECAY_EVERY must be a finite"),
        ("LINEAR.LR_DECAY_EVERY", "1.5", "LINEAR.LR_DECAY_EVERY must be a finite"),
        ("ABLATION.INIT", "'xavier'", "ABLATION.INIT must be one of default, ntk"),
    ],
)
def test_bad_switch_values_are_user_errors(capsys, key, value, fragment):
    status = main_guard(lambda: load_config(opts=[key, value]) and 0)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "key", ["MODEL.NTK_HEAD", "GRAD.BIAS", "FINETUNE.FOLD_BN", "LINEAR.NTK_HEAD"]
)
def test_switches_must_be_booleans(key):
    cfg = get_cfg()
    section, name = key.split(".")
    cfg[section][name] = 1
    with pytest.raises(GradfeatError, match=f"{key} must be True or False, got 1"):
        validate_config(cfg)
