"""Run one pretraining recipe on one dataset and save the backbone."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, Subset

from ..config.defaults import get_cfg
from ..data import get_dataset
from ..errors import GradfeatError, lightning_interrupts
from .archs import create_arch
from .cache import save_checkpoint
from .held_out import held_out_scores
from .recipes import RECIPES


def list_methods() -> list[str]:
    """Names accepted by :func:`pretrain` and ``pretrain.py --method``."""
    return sorted(RECIPES)


def _held_out(
    module: Any, arch: str, dataset: str, data_dir: str, seed: int, raw: bool, splits: Any,
    max_samples: int,
) -> dict[str, Any]:
    """Held-out scores of the trained backbone beside a random one of the same arch.

    With ``max_samples`` (a smoke run) only that many train and test items are used.
    """
    cfg = module.backbone.pretrained_cfg
    if raw:
        splits = get_dataset(
            dataset,
            input_size=cfg["input_size"],
            mean=cfg["mean"],
            std=cfg["std"],
            data_dir=data_dir,
        )
    if max_samples > 0:
        rng = np.random.default_rng(seed)

        def sample(dataset: Any) -> Subset:
            rows = rng.permutation(len(dataset))[:max_samples]
            return Subset(dataset, np.sort(rows).tolist())

        splits = dataclasses.replace(
            splits, train=sample(splits.train), test=sample(splits.test)
        )

    def random_backbone() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            return create_arch(arch)

    return held_out_scores(module.backbone, random_backbone, splits, module.pretext_score)


def pretrain(
    method: str,
    dataset: str,
    arch: str,
    epochs: int,
    out: str,
    *,
    seed: int = 0,
    data_dir: str = "",
    cfg: CfgNode | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain an architecture with a recipe on a dataset's train split.

    The run is deterministic for a seed on CPU (seeded initialisation and data
    order, no worker processes). The backbone's ``state_dict`` is saved atomically
    to ``out`` and its metadata to ``out`` with a ``.json`` suffix.

    Args:
        method: One of :func:`list_methods`.
        dataset: A name from ``gradfeat_plugin.data.list_datasets()``.
        arch: A name from ``gradfeat_plugin.zoo.list_archs()``.
        epochs: Passes over the train split.
        out: Checkpoint path.
        seed: Seed of initialisation, data order and augmentations.
        data_dir: Local root of datasets that are not embedded.
        cfg: Config whose ``PRETRAIN`` node holds the hyperparameters; defaults
            to ``get_cfg()``.
        progress: Show Lightning's progress bar.

    Returns:
        The metadata that was saved (recipe, dataset, arch, epochs, seed, final
        pretext loss, per-epoch losses, wall time, held-out scores of the
        backbone and of a random one: see :func:`~.held_out.held_out_scores`).

    Raises:
        GradfeatError: For an unknown method, arch or dataset, or ``epochs < 1``.
    """
    cfg = cfg if cfg is not None else get_cfg()
    if method not in RECIPES:
        raise GradfeatError(
            f"unknown method {method!r}; choose one of {list_methods()}"
        )
    if epochs < 1:
        raise GradfeatError(f"epochs must be at least 1, got {epochs}")
    recipe = RECIPES[method]
    pl.seed_everything(seed, workers=True, verbose=False)
    backbone = create_arch(arch)
    input_size = backbone.pretrained_cfg["input_size"]
    raw = recipe.needs_raw_images
    splits = get_dataset(
        dataset,
        input_size=input_size,
        mean=(0.0,) * input_size[0] if raw else backbone.pretrained_cfg["mean"],
        std=(1.0,) * input_size[0] if raw else backbone.pretrained_cfg["std"],
        data_dir=data_dir,
    )
    module = recipe(backbone, cfg, num_classes=splits.num_classes, task=splits.task)
    train = splits.train
    if 0 < cfg.PRETRAIN.MAX_SAMPLES < len(train):
        rows = np.random.default_rng(seed).permutation(len(train))[
            : cfg.PRETRAIN.MAX_SAMPLES
        ]
        train = Subset(train, np.sort(rows).tolist())
    loader = DataLoader(
        module.train_dataset(train),
        batch_size=cfg.PRETRAIN.BATCH_SIZE,
        shuffle=True,
        drop_last=len(train) >= cfg.PRETRAIN.BATCH_SIZE,
        # -1 (the CPU-count default of evaluation) reads in the main process here:
        # workers draw other augmentations, and the zoo's weights must not change.
        num_workers=max(0, cfg.DATA.NUM_WORKERS),
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator=cfg.TRAINER.ACCELERATOR,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            default_root_dir=scratch,
        )
        with lightning_interrupts(trainer):
            trainer.fit(module, loader)
    wall_time = time.perf_counter() - start
    held_out = _held_out(
        module, arch, dataset, data_dir, seed, raw, splits, cfg.PRETRAIN.MAX_SAMPLES
    )
    metadata = {
        "recipe": method,
        "dataset": dataset,
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        "final_pretext_loss": module.epoch_losses[-1],
        "epoch_losses": module.epoch_losses,
        "wall_time_s": round(wall_time, 2),
        "train_samples": len(train),
        "held_out": held_out,
        "pretrained_cfg": backbone.pretrained_cfg,
        "gradfeat_split": backbone.gradfeat_split,
        "pretrain_cfg": cfg.PRETRAIN,
        "torch": torch.__version__,
    }
    state_dict = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    save_checkpoint(os.fspath(out), state_dict, metadata)
    return metadata
