"""The protocol classes and the command line share their defaults: a class at its
defaults plus ``recommended_kwargs`` trains as ``eval.py`` does on that dataset."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.config import dataset_config, load_config
from gradfeat_plugin.config.protocol_kwargs import protocol_kwargs, recommended_kwargs
from gradfeat_plugin.protocols import get_protocol_class

TRAINED = ("linear", "grad", "gradfeat", "finetune")
#: Where the command line differs from the classes at their defaults: the shipped
#: dataset configs' learning rate, and fine-tuning's start from the chosen probe
#: (the run fits it first; a class user installs one with set_probe).
DIFFERENCES = {
    None: {"finetune": {"head_init": "probe"}},
    "digits": {"linear": {"lr": 0.01}, "grad": {"lr": 0.01}, "gradfeat": {"lr": 0.01},
               "finetune": {"head_init": "probe"}},
    "mnist5k": {"linear": {"lr": 0.01}, "grad": {"lr": 0.01}, "gradfeat": {"lr": 0.01},
                "finetune": {"head_init": "probe"}},
}


def _training(model: Any) -> dict[str, Any]:
    """What decides a protocol's training: its optimiser's settings, schedule,
    clipping, seed and the protocol's own switches."""
    if not hasattr(model, "build_optimizer"):  # kNN: its saved arguments
        return dict(model.hparams)
    optimizer = model.build_optimizer(
        [torch.zeros(1, requires_grad=True)], model.get_effective_lr()
    )
    state = {k: v for k, v in optimizer.defaults.items()
             if k in ("lr", "betas", "weight_decay", "momentum")}
    state.update(
        optimizer=type(optimizer).__name__, lr_decay=model.lr_decay,
        lr_decay_every=model.lr_decay_every, clip=model.clip_grad_norm(),
        seed=model.seed, task=model.task,
    )
    for name in ("probe_lr", "standardize", "head_init", "ntk_head", "whole_network",
                 "random_probe", "cache_batch_size"):
        if hasattr(model, name):
            state[name] = getattr(model, name)
    if model.hparams.get("bias") is not None:
        state["bias"] = model.hparams["bias"]
    return state


@pytest.mark.parametrize("dataset", list(DIFFERENCES))
def test_the_differences_are_the_documented_ones(dataset):
    got = {name: recommended_kwargs(name, dataset) for name in (*TRAINED, "knn")}
    expected = {name: DIFFERENCES[dataset].get(name, {}) for name in got}
    assert got == expected


@pytest.mark.parametrize("dataset", list(DIFFERENCES))
@pytest.mark.parametrize("name", [*TRAINED, "knn"])
def test_a_class_at_its_defaults_trains_as_the_command_line(dataset, name):
    cfg = load_config(dataset_config(dataset) if dataset else None)
    cls = get_protocol_class(name)
    torch.manual_seed(0)
    encoder = BiGANEncoder(width=4)
    by_hand = cls(encoder, num_classes=10, **recommended_kwargs(name, dataset))
    by_cli = cls(encoder, num_classes=10, **protocol_kwargs(cfg, name))
    assert _training(by_hand) == _training(by_cli)
    if name in TRAINED:
        lr = 1e-3 if dataset is None or name == "finetune" else 1e-2
        assert _training(by_hand)["lr"] == lr
