"""``zoo:NAME`` models: pretrained here on embedded data, shipped, loaded by name.

The package ships the weights of every zoo model (``zoo/weights``: one plain
``state_dict`` and its metadata per model, and ``manifest.json`` with the command,
seed, SHA-256 digest and recipe digest of each). A model whose recipe no longer
matches its shipped weights (someone changed the recipe) is pretrained on first use
instead and cached under ``$GRADFEAT_CACHE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass

import torch
from torch import nn

from fvcore.common.config import CfgNode

from ..config import get_cfg
from ..errors import GradfeatError
from .archs import create_arch
from .cache import zoo_cache_dir
from .pretrain import pretrain

logger = logging.getLogger(__name__)

#: The shipped weights' manifest, in :func:`shipped_weights_dir`.
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ZooEntry:
    """How a zoo model is made: ``pretrain(method, dataset, arch, epochs, seed)``.

    Args:
        method: Pretraining recipe.
        dataset: Dataset whose train split is used.
        arch: Architecture name.
        epochs: Passes over the train split.
        seed: Seed of the run.
        options: ``KEY VALUE`` overrides of the PRETRAIN defaults, e.g.
            ``("PRETRAIN.BIGAN.WIDTH", "64")``.
    """

    method: str
    dataset: str
    arch: str
    epochs: int
    seed: int = 0
    options: tuple[str, ...] = ()

    def config(self) -> CfgNode:
        """The PRETRAIN config of the recipe: the defaults and :attr:`options`."""
        cfg = get_cfg()
        cfg.merge_from_list(list(self.options))
        return cfg


ZOO: dict[str, ZooEntry] = {
    # The default model. Epochs are chosen so that each pretext task is learned: the
    # held-out scores are recorded in the shipped metadata (see docs/RESULTS.md).
    "rotation_mnist5k": ZooEntry("rotation", "mnist5k", "resnet_small", epochs=10),
    # The paper's encoder (ALI's), trained as a BiGAN at 32 px, with a generator and
    # discriminator twice the default width. A random ALI encoder is a strong probe on
    # digits (90.7 %); longer runs drifted back to it (90.8 % after 6 epochs), 3 epochs
    # reach 94.4 %.
    "bigan_ali_mnist5k": ZooEntry(
        "bigan", "mnist5k", "bigan_ali", epochs=3, options=("PRETRAIN.BIGAN.WIDTH", "64")
    ),
    "supervised_mnist5k": ZooEntry("supervised", "mnist5k", "resnet_small", epochs=3),
    "supervised_digits": ZooEntry("supervised", "digits", "resnet_small", epochs=10),
    "simclr_mnist5k": ZooEntry("simclr", "mnist5k", "resnet_small", epochs=5),
}


def list_zoo_models() -> list[str]:
    """Names accepted by :func:`zoo_model` (and by ``--model zoo:NAME``).

    >>> "rotation_mnist5k" in list_zoo_models()
    True
    """
    return sorted(ZOO)


def recipe_digest(name: str) -> str:
    """Eight hex digits of SHA-256 over a zoo model's recipe (its entry and the
    PRETRAIN defaults): weights made by another recipe are never loaded for it."""
    recipe = f"{ZOO[name]!r}\n{get_cfg().PRETRAIN.dump()}" if name in ZOO else name
    return hashlib.sha256(recipe.encode()).hexdigest()[:8]


def zoo_checkpoint_path(name: str) -> str:
    """The cached checkpoint of a zoo model (its metadata: same name, ``.json``).

    The file name carries :func:`recipe_digest`, so changing a recipe pretrains
    afresh instead of reusing old weights.
    """
    return os.path.join(zoo_cache_dir(), f"{name}-{recipe_digest(name)}.pth")


def shipped_weights_dir() -> str:
    """The folder of the weights that ship with the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def read_manifest() -> dict[str, dict]:
    """The shipped weights' manifest: name -> file, sha256, recipe, command, seed."""
    path = os.path.join(shipped_weights_dir(), MANIFEST)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        manifest = err
    if not isinstance(manifest, dict) or not all(
        isinstance(entry, dict) for entry in manifest.values()
    ):
        why = manifest if isinstance(manifest, Exception) else "not a mapping of models"
        raise GradfeatError(
            f"the shipped weights' manifest {path} is damaged ({why}); reinstall the "
            "package or remake it with benchmarks/make_zoo.py"
        )
    return manifest


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_checkpoint(name: str) -> str | None:
    """The shipped weights of ``name`` when they were made by today's recipe.

    Raises:
        GradfeatError: The shipped file does not match the manifest's digest.
    """
    entry = read_manifest().get(name)
    if entry is None or entry.get("recipe_digest") != recipe_digest(name):
        return None
    path = os.path.join(shipped_weights_dir(), entry["file"])
    if not os.path.exists(path) or file_sha256(path) != entry["sha256"]:
        raise GradfeatError(
            f"the shipped weights of zoo:{name} ({path}) are missing or do not match "
            "the manifest's SHA-256; reinstall the package or remake them with "
            "benchmarks/make_zoo.py"
        )
    return path


def zoo_model(name: str, pretrained: bool = True, progress: bool = True) -> nn.Module:
    """A zoo backbone: ``forward(x)`` returns ``(B, num_features)`` pooled features.

    With ``pretrained`` the weights are the ones shipped with the package; when
    the recipe has changed since they were made, they come from the cache
    (:func:`zoo_cache_dir`), where the model is pretrained on first use.
    The model is returned in eval mode and carries ``num_features``,
    ``pretrained_cfg`` (``input_size``, ``mean``, ``std``, ``file``) and
    ``gradfeat_split``.

    Args:
        name: One of :func:`list_zoo_models`.
        pretrained: Load (or make) the pretrained weights; ``False`` gives the
            architecture with random initialisation.
        progress: Show a progress bar while pretraining on first use.

    Raises:
        GradfeatError: For an unknown name or a corrupt cached checkpoint.

    >>> zoo_model("rotation_mnist5k", pretrained=False).num_features
    128
    """
    if name not in ZOO:
        raise GradfeatError(
            f"unknown zoo model {name!r}; choose one of {list_zoo_models()}"
        )
    entry = ZOO[name]
    model = create_arch(entry.arch)
    if not pretrained:
        return model
    path = shipped_checkpoint(name) or zoo_checkpoint_path(name)
    if not os.path.exists(path):
        logger.warning("zoo:%s is not cached; pretraining it once into %s", name, path)
        pretrain(
            entry.method,
            entry.dataset,
            entry.arch,
            entry.epochs,
            path,
            seed=entry.seed,
            cfg=entry.config(),
            progress=progress,
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        KeyError,
    ) as err:
        raise GradfeatError(
            f"cached zoo checkpoint {path} is corrupt or does not match {entry.arch} "
            f"({type(err).__name__}); delete it to pretrain zoo:{name} again"
        ) from err
    model.pretrained_cfg = {**model.pretrained_cfg, "file": path}
    return model.eval()
