"""The zoo's shipped weights: every model ships, matches its manifest, has learned
its pretext task, and the default job loads them without pretraining."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.zoo import ZOO, list_zoo_models, metadata_path, zoo_model
from gradfeat_plugin.zoo import registry
from gradfeat_plugin.zoo.held_out import feature_scores
from gradfeat_plugin.data import get_dataset


@pytest.fixture
def no_pretraining(monkeypatch, tmp_path):
    """Pretraining fails loudly, and the cache is empty."""
    monkeypatch.setenv("GRADFEAT_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("pretrained instead of loading the shipped weights")

    monkeypatch.setattr(registry, "pretrain", refuse)


@pytest.mark.parametrize("name", list_zoo_models())
def test_every_zoo_model_ships_with_its_recipe(name, no_pretraining):
    entry = registry.read_manifest()[name]
    path = registry.shipped_checkpoint(name)
    assert path is not None and os.path.basename(path) == entry["file"] == f"{name}.pth"
    assert registry.file_sha256(path) == entry["sha256"]
    assert entry["recipe_digest"] == registry.recipe_digest(name)
    e = ZOO[name]
    assert f"--method {e.method} " in entry["command"]
    assert f"--epochs {e.epochs} " in entry["command"] and entry["seed"] == e.seed
    model = zoo_model(name, progress=False)
    assert model.pretrained_cfg["file"] == path and not model.training
    meta = json.loads(open(metadata_path(path)).read())
    assert meta["held_out"] == entry["held_out"] and meta["epochs"] == e.epochs


def _scores(name: str) -> tuple[dict, dict]:
    held_out = registry.read_manifest()[name]["held_out"]
    return held_out["pretrained"], held_out["random_encoder"]


def test_shipped_models_have_learned_their_pretext_tasks():
    rotation, _ = _scores("rotation_mnist5k")
    assert rotation["rotation_top1"] >= 0.95  # chance: 0.25
    for name in ("supervised_mnist5k", "supervised_digits"):
        assert _scores(name)[0]["supervised_top1"] >= 0.9
    simclr, random = _scores("simclr_mnist5k")
    assert simclr["knn_top1"] >= random["knn_top1"] + 0.1
    bigan, random = _scores("bigan_ali_mnist5k")
    assert bigan["probe_top1"] > random["probe_top1"]


def test_default_model_probe_beats_random_features_as_recorded(no_pretraining):
    """Recompute the default model's held-out probe; it matches its metadata."""
    model = zoo_model("rotation_mnist5k", progress=False)
    cfg = model.pretrained_cfg
    splits = get_dataset(
        "mnist5k", input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"]
    )
    scores = feature_scores(model, splits)
    pretrained, random = _scores("rotation_mnist5k")
    assert scores["probe_top1"] == pytest.approx(pretrained["probe_top1"], abs=0.01)
    assert scores["probe_top1"] >= random["probe_top1"] + 0.05


def test_tampered_shipped_weights_are_refused(tmp_path, monkeypatch, no_pretraining):
    folder = tmp_path / "weights"
    shutil.copytree(registry.shipped_weights_dir(), folder)
    with open(folder / "rotation_mnist5k.pth", "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    monkeypatch.setattr(registry, "shipped_weights_dir", lambda: str(folder))
    with pytest.raises(GradfeatError, match="do not match the manifest"):
        zoo_model("rotation_mnist5k")


def test_a_changed_recipe_does_not_load_the_shipped_weights(monkeypatch, tmp_path):
    entry = ZOO["rotation_mnist5k"]
    monkeypatch.setitem(ZOO, "rotation_mnist5k", type(entry)(**{**vars(entry), "epochs": 1}))
    assert registry.shipped_checkpoint("rotation_mnist5k") is None
    monkeypatch.setenv("GRADFEAT_CACHE", str(tmp_path))
    made = []

    def fake_pretrain(method, dataset, arch, epochs, out, **kwargs):
        made.append(epochs)
        torch.save(registry.create_arch(arch).state_dict(), out)

    monkeypatch.setattr(registry, "pretrain", fake_pretrain)
    model = zoo_model("rotation_mnist5k", progress=False)
    assert made == [1] and model.pretrained_cfg["file"].startswith(str(tmp_path))
