"""A timm/lightly user's setup from the command line: ``--model-kwargs``, ``--mean``/
``--std`` and the checkpoint's prefix reach the model, the data and the stored
setting (one leaderboard row per setting)."""

from __future__ import annotations

import copy
import logging
import sqlite3
from pathlib import Path

import pytest
import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from gradfeat_plugin.backbones import checkpoint
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.config import load_config
from gradfeat_plugin.evaluate import load_inputs
from gradfeat_plugin.results.setting import setting_of_config
from tests.benchmarks.test_eval import eval_script, run_eval

KNN = ["--protocol", "knn", "--model", "bigan_encoder", "--dataset", "digits",
       "--no-progress"]


def run_knn(*argv: str) -> int:
    return run_eval([*KNN, *argv, "KNN.K", "10"])


def _settings(db: Path) -> list[dict[str, str]]:
    with sqlite3.connect(db) as conn:
        query = "SELECT config FROM results ORDER BY rowid"
        configs = [c for (c,) in conn.execute(query)]
    return [dict(setting_of_config(c)) for c in configs]


def _byol_checkpoint(path: Path) -> str:
    torch.manual_seed(0)
    backbone = BiGANEncoder(width=8)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    momentum = copy.deepcopy(backbone)
    state |= {f"backbone_momentum.{k}": v for k, v in momentum.state_dict().items()}
    state |= {f"projection_head.{k}": v
              for k, v in BYOLProjectionHead(64, 32, 16).state_dict().items()}
    state |= {f"prediction_head.{k}": v
              for k, v in BYOLPredictionHead(16, 32, 16).state_dict().items()}
    torch.save({"state_dict": state, "epoch": 9}, path)
    return str(path)


def test_byol_checkpoint_with_and_without_weights_key_is_one_setting(tmp_path, caplog):
    db = tmp_path / "r.db"
    weights = _byol_checkpoint(tmp_path / "byol.ckpt")
    common = ["--weights", weights, "--model-kwargs", "width=8", "--results", str(db)]
    caplog.set_level(logging.INFO, logger=checkpoint.__name__)
    assert run_knn(*common) == 0
    n = len(BiGANEncoder(width=8).state_dict())
    assert f"checkpoint {weights}: {n} tensors loaded from backbone.*; left out on " \
           f"purpose: backbone_momentum.* ({n}), prediction_head.* (8), " \
           "projection_head.* (8)\n" in caplog.text
    assert run_knn("--weights-key", "backbone", *common) == 0
    first, second = _settings(db)
    assert first == second and first["MODEL.WEIGHTS_KEY"] == '"backbone"'
    assert first["MODEL.KWARGS.width"] == "8"


def test_model_kwargs_make_their_own_setting(tmp_path):
    db = tmp_path / "r.db"
    runs = [["width=8"], ["width=8"], ["width=4"]]
    for kwargs in runs:
        assert run_knn("--weights", "random", "--results", str(db), "--model-kwargs",
                       *kwargs) == 0
    eight, again, four = _settings(db)
    assert eight == again != four
    assert (eight["MODEL.KWARGS.width"], four["MODEL.KWARGS.width"]) == ("8", "4")
    with sqlite3.connect(db) as conn:
        query = "SELECT params FROM results ORDER BY rowid"
        params = [p for (p,) in conn.execute(query)]
    widths = [BiGANEncoder(width=w) for w in (8, 8, 4)]
    assert params == [sum(p.numel() for p in m.parameters()) for m in widths]


def test_a_keyword_the_model_does_not_take_is_one_error_line(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert run_knn("--weights", "random", "--model-kwargs", "widht=8",
                   "--results", str(db)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backbone bigan_encoder cannot be built with "
                          "--model-kwargs widht=8 (") and err.count("\n") == 1
    assert not db.exists()


def test_flags_before_overrides_and_into_the_config():
    args = eval_script.parse_args([
        "--model-kwargs", "img_size=32", "patch_size=8", "--mean", "imagenet",
        "--std", "0.5", "0.25", "0.125", "TRAIN.LR", "0.1",
    ])
    assert args.model_kwargs == {"img_size": 32, "patch_size": 8}
    assert (args.mean, args.std, args.opts) == ("imagenet", [0.5, 0.25, 0.125],
                                                ["TRAIN.LR", "0.1"])


def _first_image(mean=None, std=None) -> torch.Tensor:
    overrides = {"MODEL.SPEC": "bigan_encoder", "MODEL.WEIGHTS": "random",
                 "MODEL.KWARGS": {"width": 4}, "DATA.DATASET": "digits",
                 "MODEL.MEAN": mean, "MODEL.STD": std}
    backbone, data = load_inputs(load_config(overrides=overrides))
    return data.test[0][0], backbone


def test_mean_and_std_reach_the_transform():
    image, backbone = _first_image()
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)  # the model's own
    pixels = image * 0.5 + 0.5  # in [0, 1]
    custom, backbone = _first_image([0.25, 0.5, 0.75], [0.5, 0.25, 0.125])
    assert backbone.mean == (0.25, 0.5, 0.75) and backbone.std == (0.5, 0.25, 0.125)
    expected = (pixels - torch.tensor([0.25, 0.5, 0.75]).view(3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 0.125]).view(3, 1, 1)
    torch.testing.assert_close(custom, expected)
    named, backbone = _first_image("imagenet", "imagenet")
    assert backbone.std == (0.229, 0.224, 0.225)
    torch.testing.assert_close(named[2], (pixels[2] - 0.406) / 0.225)


def test_named_and_numeric_mean_are_one_setting(tmp_path):
    db = tmp_path / "r.db"
    for mean in (["imagenet"], ["0.485", "0.456", "0.406"], ["0.5", "0.5", "0.5"]):
        assert run_knn("--weights", "random", "--model-kwargs", "width=4",
                       "--results", str(db), "--mean", *mean) == 0
    named, numeric, other = _settings(db)
    assert named == numeric != other
    assert named["MODEL.MEAN"] == "[0.485, 0.456, 0.406]"


@pytest.mark.parametrize("argv, fragment", [
    (["--mean", "0.5", "0.5"], "--mean (MODEL.MEAN) needs 1 or 3 value(s)"),
    (["--std", "0.5", "0", "0.5"], "--std (MODEL.STD) must be positive"),
    (["--mean", "0.5", "x"], "--mean takes numbers (one per channel) or one name"),
    (["--model-kwargs", "in_chans=1", "--mean", "imagenet"],
     "--mean (MODEL.MEAN) needs 1 value(s)"),
])
def test_bad_normalisation_is_one_error_line(tmp_path, capsys, argv, fragment):
    db = tmp_path / "r.db"
    assert run_knn("--weights", "random", "--results", str(db), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert not db.exists()
