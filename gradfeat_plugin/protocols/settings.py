"""What one run of protocols needs besides the backbone and the data: plain values."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import lightning_utilities.core.rank_zero as rank_zero
from pytorch_lightning import Trainer

from ._cache import CachePolicy, ReleaseFreedMemory

#: Lightning's loggers, in the standalone packages and in the unified ``lightning``.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")
#: The modules Lightning's own warnings are attributed to.
LIGHTNING_MODULES = r"(pytorch_lightning|lightning_fabric|lightning)(\.|$)"


@dataclass
class TrainerSettings:
    """The Lightning ``Trainer`` every protocol of a run is fitted with.

    Attributes:
        epochs: Training epochs.
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: Devices per node.
        num_nodes: Nodes.
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ...).
        val_every_n_epochs: Validate every N epochs; 0 once, after the last.
    """

    epochs: int = 10
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    val_every_n_epochs: int = 0


def build_trainer(
    settings: TrainerSettings, progress: bool = True, **overrides: Any
) -> Trainer:
    """A quiet Lightning Trainer (no logger, no checkpoints, no sanity check) that
    hands freed memory back between training steps (:class:`ReleaseFreedMemory`).

    Args:
        settings: Epochs, devices, strategy and precision.
        progress: Show Lightning's progress bar.
        **overrides: Other ``Trainer`` arguments (e.g. ``limit_val_batches``).
    """
    epochs = settings.epochs
    return Trainer(
        max_epochs=epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        precision=settings.precision,
        check_val_every_n_epoch=settings.val_every_n_epochs or epochs,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[ReleaseFreedMemory(), *overrides.pop("callbacks", [])],
        **overrides,
    )


@contextlib.contextmanager
def silent_lightning() -> Iterator[None]:
    """Hold back Lightning's info lines and its own warnings, e.g. around a Trainer a
    protocol fits inside the user's: the user's Trainer has printed those that apply
    (devices, a missing ``val_dataloader``), and the inner one would print them again.
    Warnings raised by other code still show."""
    # Lightning's info lines (devices, tips, "`Trainer.fit` stopped") go to the
    # logger its rank-zero helpers hold: the package imported last sets it.
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    loggers.append(rank_zero.log)
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=LIGHTNING_MODULES)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass
class RunSettings:
    """Everything ``run_protocols`` reads, as plain values.

    Attributes:
        protocol_kwargs: Protocol name -> the keyword sets its class is built with
            (besides ``model``, ``num_classes``, ``feature_dim``, ``task``,
            ``cached``, ``split`` and ``batch_size_per_device``), one run each: the
            optimisers and learning rates of a sweep. The best on the validation
            split is reported.
        trainer: The Trainer of every protocol.
        protocol_epochs: Protocol name -> its training epochs, where they are not
            ``trainer``'s (the linear probe's ``LINEAR.EPOCHS``).
        batch_size: Global batch size.
        seed: The run's seed.
        split: θ2 module names; empty: the backbone's default.
        fold_bn: Fold θ2's BatchNorms in the network θ1's outputs come from.
        ntk: Its NTK parametrisation (does not change θ1's outputs).
        engine: Its JVP engine.
        standardize: Standardise the features of the protocols whose heads read
            them standardised, with training-set statistics.
        augment: Training images are augmented (nothing can be cached).
        num_workers: DataLoader workers (``-1``: chosen from the CPU count).
        cache: Where θ1's outputs are stored.
        cache_batch_size: Batch size of the pass that computes them.
    """

    protocol_kwargs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    protocol_epochs: dict[str, int] = field(default_factory=dict)
    batch_size: int = 64
    seed: int = 0
    split: list[str] = field(default_factory=list)
    fold_bn: bool = True
    ntk: bool = True
    engine: str = "auto"
    standardize: bool = True
    augment: bool = False
    num_workers: int = -1
    cache: CachePolicy = field(default_factory=CachePolicy)
    cache_batch_size: int = 64

    def trainer_of(self, name: str) -> TrainerSettings:
        """The Trainer settings of protocol ``name``: ``trainer`` with its own
        epochs, if it has any."""
        epochs = self.protocol_epochs.get(name)
        return self.trainer if epochs is None else replace(self.trainer, epochs=epochs)


def setting_label(kwargs: dict[str, Any]) -> str:
    """A run's setting as a row records it: its optimiser and learning rate.

    >>> setting_label({"optimizer": "sgd", "lr": 0.01, "momentum": 0.9})
    'sgd, lr 0.01'
    """
    parts = [str(kwargs["optimizer"])] if kwargs.get("optimizer") else []
    if kwargs.get("lr") is not None:
        parts.append(f"lr {kwargs['lr']:g}")
    return ", ".join(parts)
