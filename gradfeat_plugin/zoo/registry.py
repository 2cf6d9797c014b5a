"""``zoo:NAME`` models: pretrained here on embedded data, cached, loaded by name."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass

import torch
from torch import nn

from ..config import get_cfg
from ..errors import GradfeatError
from .archs import create_arch
from .cache import zoo_cache_dir
from .pretrain import pretrain

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooEntry:
    """How a zoo model is made: ``pretrain(method, dataset, arch, epochs, seed)``.

    Args:
        method: Pretraining recipe.
        dataset: Dataset whose train split is used.
        arch: Architecture name.
        epochs: Passes over the train split.
        seed: Seed of the run.
    """

    method: str
    dataset: str
    arch: str
    epochs: int
    seed: int = 0


ZOO: dict[str, ZooEntry] = {
    # The default model: about 40 s of pretraining on 2 CPU cores.
    "rotation_mnist5k": ZooEntry("rotation", "mnist5k", "resnet_small", epochs=1),
    "bigan_mnist5k": ZooEntry("bigan", "mnist5k", "bigan_encoder_w32", epochs=5),
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


def zoo_checkpoint_path(name: str) -> str:
    """The cached checkpoint of a zoo model (its metadata: same name, ``.json``).

    The file name carries a digest of the recipe (the zoo entry and the PRETRAIN
    defaults), so changing a recipe pretrains afresh instead of reusing old weights.
    """
    recipe = f"{ZOO[name]!r}\n{get_cfg().PRETRAIN.dump()}" if name in ZOO else name
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return os.path.join(zoo_cache_dir(), f"{name}-{digest}.pth")


def zoo_model(name: str, pretrained: bool = True, progress: bool = True) -> nn.Module:
    """A zoo backbone: ``forward(x)`` returns ``(B, num_features)`` pooled features.

    With ``pretrained`` the weights come from the cache (:func:`zoo_cache_dir`);
    on first use the model is pretrained on CPU-sized embedded data and cached.
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
    path = zoo_checkpoint_path(name)
    if not os.path.exists(path):
        logger.warning("zoo:%s is not cached; pretraining it once into %s", name, path)
        pretrain(
            entry.method,
            entry.dataset,
            entry.arch,
            entry.epochs,
            path,
            seed=entry.seed,
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
