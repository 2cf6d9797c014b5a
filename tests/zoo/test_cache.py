"""The zoo's cache: location, atomic writes, round trips and corrupt files."""

from __future__ import annotations

import json
import os

import pytest
import torch

from gradfeat_plugin import linearize
from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.zoo import (
    ZOO,
    list_zoo_models,
    pretrain,
    zoo_cache_dir,
    zoo_checkpoint_path,
    zoo_model,
)
from gradfeat_plugin.zoo import cache as cache_module
from gradfeat_plugin.zoo import registry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, and no shipped weights (so the cache is what is read)."""
    monkeypatch.setenv("GRADFEAT_CACHE", str(tmp_path))
    monkeypatch.setattr(registry, "shipped_weights_dir", lambda: str(tmp_path / "none"))
    return tmp_path


def test_zoo_lists_the_paper_families_and_the_default():
    families = {"rotation_mnist5k", "bigan_ali_mnist5k", "supervised_mnist5k"}
    assert families | {"supervised_digits", "simclr_mnist5k"} <= set(list_zoo_models())
    assert get_cfg().MODEL.SPEC == "zoo:rotation_mnist5k"


def test_cache_dir_is_overridable(cache, monkeypatch):
    assert zoo_cache_dir() == str(cache)
    monkeypatch.delenv("GRADFEAT_CACHE")
    assert zoo_cache_dir().endswith(os.path.join("gradfeat_plugin", "zoo"))


def test_cached_model_round_trips(cache):
    entry = ZOO["supervised_digits"]
    cfg = get_cfg()
    cfg.PRETRAIN.MAX_SAMPLES = 32
    path = zoo_checkpoint_path("supervised_digits")
    pretrain(entry.method, entry.dataset, entry.arch, 1, path, cfg=cfg, progress=False)
    model = zoo_model("supervised_digits")
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert model.pretrained_cfg["file"] == path
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    stem = os.path.basename(path)[: -len(".pth")]
    assert stem.startswith("supervised_digits-")
    assert sorted(os.listdir(cache)) == [f"{stem}.json", f"{stem}.pth"]
    assert set(json.loads((cache / f"{stem}.json").read_text())["held_out"]) >= {
        "pretrained",
        "random_encoder",
    }


def test_random_init_architecture_has_the_backbone_interface():
    model = zoo_model("rotation_mnist5k", pretrained=False)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features) == (2, 128)
    assert model.gradfeat_split == "layer3.0"
    lin = linearize(model.eval())
    f, jvp = lin.features(torch.randn(2, 3, 32, 32))
    assert f.shape == jvp.shape == (2, 128)
    assert {n.split(".")[0] for n, _ in lin.named_tangents()} == {"layer3"}


def test_corrupt_checkpoint_is_a_user_error(cache):
    with open(zoo_checkpoint_path("rotation_mnist5k"), "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(GradfeatError, match="corrupt.*delete it"):
        zoo_model("rotation_mnist5k")


def test_cache_name_follows_the_recipe(monkeypatch):
    before = zoo_checkpoint_path("rotation_mnist5k")
    assert before == zoo_checkpoint_path("rotation_mnist5k")
    entry = ZOO["rotation_mnist5k"]
    monkeypatch.setitem(ZOO, "rotation_mnist5k", type(entry)(**{**vars(entry), "epochs": 2}))
    assert zoo_checkpoint_path("rotation_mnist5k") != before


def test_unknown_zoo_model_is_a_user_error():
    with pytest.raises(GradfeatError, match="unknown zoo model.*rotation_mnist5k"):
        zoo_model("rotation_imagenet")


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pth"
    cache_module.atomic_write_bytes(str(target), b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache_module.atomic_write_bytes(str(target), b"new contents")
    assert os.listdir(tmp_path) == ["model.pth"] and target.read_bytes() == b"old"
