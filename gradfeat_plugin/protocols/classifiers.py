"""lightly-shaped classifiers: ``GradfeatClassifier``, ``GradClassifier``, ``FinetuneClassifier``.

They take lightly's ``LinearClassifier(model, batch_size_per_device, lr,
feature_dim, num_classes, topk)`` arguments plus plain keywords, and give the
command line's numbers when fitted with a Lightning ``Trainer`` directly: at the
start of training they standardise the features with training-set statistics and,
without a ``probe``, fit the linear probe ω̄ first, exactly as ``run_protocols``
does. Their saved hyperparameters are plain values, so ``load_from_checkpoint``
works.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from fvcore.common.config import CfgNode
from pytorch_lightning import Trainer, seed_everything
from torch import Tensor, nn

from ..config import get_cfg
from ..errors import lightning_interrupts
from ..linearize import FeatureStandardization, default_split, resolve_split
from ..linearize._ntk import effective_parameters
from ._cache import ITERABLE_LEN_WARNING, FrozenOutputs, cached_loader
from .finetune import FinetuneProtocol
from .gradfeat import GradFeatProtocol
from .gradient import GradProtocol
from .linear import LinearProtocol

Probe = tuple[Tensor, Tensor | None]

# Keyword -> the config key it sets; ``None`` keeps the config's (or default) value.
_KEYS = {
    "lr": "TRAIN.LR",
    "optimizer": "TRAIN.OPTIMIZER",
    "standardize": "TRAIN.STANDARDIZE_FEATURES",
    "scale_lr": "TRAIN.SCALE_LR",
    "lr_decay": "TRAIN.LR_DECAY",
    "lr_decay_every": "TRAIN.LR_DECAY_EVERY",
    "cache_batch_size": "TRAIN.CACHE_BATCH_SIZE",
    "seed": "TRAIN.SEED",
    "betas": "ADAM.BETAS",
    "weight_decay": None,  # ADAM.WEIGHT_DECAY or SGD.WEIGHT_DECAY, by optimizer
    "momentum": "SGD.MOMENTUM",
    "fold_bn": "MODEL.FOLD_BN",
    "ntk": "MODEL.NTK",
    "engine": "MODEL.ENGINE",
    "clip_grad_norm": "FINETUNE.CLIP_GRAD_NORM",
}


def _get(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value: Any) -> None:
    *path, last = key.split(".")
    node: Any = cfg
    for part in path:
        node = node[part]
    node[last] = value


def _plain(value: Any) -> Any:
    """Tuples as lists, numbers as Python numbers: what a checkpoint stores safely."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def build_config(
    cfg: CfgNode | None, **keywords: Any
) -> tuple[CfgNode, dict[str, Any]]:
    """A private config from ``cfg`` (or the defaults) with the keywords applied.

    Returns:
        The config, and every keyword of :data:`_KEYS` with its resolved value.
    """
    unknown = sorted(set(keywords) - set(_KEYS))
    if unknown:
        raise TypeError(
            f"unknown hyperparameters {', '.join(unknown)}; known: {', '.join(_KEYS)}"
        )
    cfg = (cfg or get_cfg()).clone()
    cfg.defrost()
    if keywords.get("seed") is None:
        # lightly scripts call seed_everything(seed), which Lightning records here.
        keywords["seed"] = int(os.environ.get("PL_GLOBAL_SEED", cfg.TRAIN.SEED))
    if keywords.get("lr") is not None:
        # An explicit lr is every protocol's, the probe fitted first included.
        for key in cfg.TRAIN.LR_BY_PROTOCOL:
            cfg.TRAIN.LR_BY_PROTOCOL[key] = None
    optimizer = keywords.get("optimizer") or cfg.TRAIN.OPTIMIZER
    decay_key = "SGD.WEIGHT_DECAY" if optimizer == "sgd" else "ADAM.WEIGHT_DECAY"
    resolved = {}
    for name, key in _KEYS.items():
        key = key or decay_key
        value = keywords.get(name)
        if value is not None:
            _set(cfg, key, tuple(value) if isinstance(value, list) else value)
        resolved[name] = _plain(_get(cfg, key))
    return cfg, resolved


def whole_module_split(model: nn.Module, split: str | Sequence[str] | None) -> Any:
    """θ2 inside a whole SSL module: its backbone's top block when ``split`` is None.

    lightly's methods keep the backbone as ``self.backbone``; their projection
    heads come last, so the generic default (the last child with parameters) would
    pick a head the features do not depend on.
    """
    backbone = getattr(model, "backbone", None)
    if split is None and isinstance(backbone, nn.Module) and backbone is not model:
        return [f"backbone.{name}" for name in default_split(backbone)]
    return split


def _check_feature_dim(feature_dim: int | None, actual: int) -> None:
    if feature_dim is not None and feature_dim != actual:
        raise ValueError(
            f"feature_dim={feature_dim} but the model's features have {actual} "
            "dimensions; leave feature_dim out to take them from the model"
        )


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class _Prepared:
    """Shared by the linear-model classifiers: standardisation and ω̄ at train start."""

    model: Any
    cfg: CfgNode
    trainer: Trainer

    def _init_prepared(self, source: nn.Module, probe: Any, probe_epochs: int | None) -> None:
        # The backbone as given, not a submodule: the probe is built from it as the
        # command line builds it, so that both draw the same random numbers.
        object.__setattr__(self, "_source_model", source)
        self._given_probe = _as_probe(probe)
        self.probe_epochs = probe_epochs
        self.register_buffer("prepared", torch.tensor(False))  # type: ignore[attr-defined]

    def on_train_start(self) -> None:
        """Standardise with training-set statistics and install ω̄ (fitting it
        first when no ``probe`` was given), unless done before (a reloaded model)."""
        if bool(self.prepared):  # type: ignore[attr-defined]
            return
        loader = self.trainer.train_dataloader
        dataset = loader.dataset  # type: ignore[union-attr]
        device = self.prepared.device  # type: ignore[attr-defined]
        frozen = FrozenOutputs(
            self.model, self.cfg.TRAIN.CACHE_BATCH_SIZE, 0, device
        )
        features = frozen.features(dataset, direct=True)
        mean, std = FeatureStandardization.statistics(features.inputs)
        if self.cfg.TRAIN.STANDARDIZE_FEATURES:
            self.set_standardization(mean, std)  # type: ignore[attr-defined]
        else:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        if self._given_probe is not None:
            weight, bias = self._given_probe
            # A probe of raw features, e.g. lightly's LinearClassifier, rewritten
            # for standardised ones: W (f - m) / s + b' = W f + b.
            weight = weight.to(mean)
            bias = torch.zeros(len(weight)).to(mean) if bias is None else bias.to(mean)
            self.set_probe(weight * std, bias + weight @ mean)  # type: ignore[attr-defined]
        else:
            self.set_probe(*self._fit_probe(features, mean, std, loader))  # type: ignore[attr-defined]
        self.prepared.fill_(True)  # type: ignore[attr-defined]

    def _fit_probe(
        self, features: Any, mean: Tensor, std: Tensor, loader: Any
    ) -> tuple[Tensor, Tensor]:
        """ω̄ as ``run_protocols`` trains it: the linear protocol, seeded, on stored
        features, with this run's optimiser and epochs."""
        epochs = self.probe_epochs or self.trainer.max_epochs
        if not epochs or epochs < 0:
            raise ValueError("the probe needs a number of epochs: pass probe_epochs")
        state = _rng_state()
        level = logging.getLogger("pytorch_lightning").level
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
        try:
            seed_everything(self.cfg.TRAIN.SEED, workers=True, verbose=False)
            trainer = Trainer(
                max_epochs=epochs,
                accelerator="gpu" if mean.device.type == "cuda" else "cpu",
                devices=1,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
            )
            probe = LinearProtocol(
                model=self._source_model,  # type: ignore[attr-defined]
                num_classes=self.num_classes,  # type: ignore[attr-defined]
                cfg=self.cfg,
                task=self.task,  # type: ignore[attr-defined]
                cached=True,
                split=self.model.split,
                batch_size_per_device=self.batch_size_per_device,  # type: ignore[attr-defined]
            )
            probe.set_standardization(mean, std)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=ITERABLE_LEN_WARNING)
                with lightning_interrupts(trainer):
                    trainer.fit(
                        probe, cached_loader(features, loader.batch_size, shuffle=True)
                    )
        finally:
            logging.getLogger("pytorch_lightning").setLevel(level)
            _set_rng_state(state)
        return probe.probe()


def _as_probe(probe: Any) -> Probe | None:
    """``(weight, bias)`` from a tuple, an ``nn.Linear`` or a lightly classifier."""
    if probe is None:
        return None
    head = getattr(probe, "classification_head", probe)
    if isinstance(head, nn.Linear):
        weight, bias = effective_parameters(head)
        return weight.detach().clone(), None if bias is None else bias.detach().clone()
    weight, bias = probe
    return weight.detach().clone(), None if bias is None else bias.detach().clone()


def _save_plain_hyperparameters(module: Any, values: dict[str, Any]) -> None:
    """Replace what ``BaseClassifier`` saved (the fvcore config among it) by plain
    values, so that ``load_from_checkpoint`` needs no custom global."""
    module.hparams.clear()
    module.save_hyperparameters(values)


def _topk(topk: Sequence[int], num_classes: int) -> tuple[int, ...]:
    return tuple(sorted({min(int(k), num_classes) for k in topk}))


def _init_linear_model(self: Any, args: dict[str, Any]) -> None:
    """The constructor of :class:`GradfeatClassifier` and :class:`GradClassifier`."""
    model, num_classes = args["model"], args["num_classes"]
    config, resolved = build_config(
        args["cfg"], lr=args["lr"], optimizer=args["optimizer"],
        standardize=args["standardize"], seed=args["seed"], **args["hyperparameters"],
    )
    split = resolve_split(model, whole_module_split(model, args["split"]))
    protocol = GradProtocol if isinstance(self, GradClassifier) else GradFeatProtocol
    protocol.__init__(
        self, model, num_classes, config, task=args["task"],
        optimizer=resolved["optimizer"], split=split,
        batch_size_per_device=args["batch_size_per_device"],
    )
    _check_feature_dim(args["feature_dim"], self.model.num_features)
    self.topk = _topk(args["topk"], num_classes)
    self._init_prepared(model, args["probe"], args["probe_epochs"])
    _save_plain_hyperparameters(self, dict(
        batch_size_per_device=args["batch_size_per_device"],
        feature_dim=self.model.num_features,
        num_classes=num_classes,
        topk=list(args["topk"]),
        split=list(split),
        probe_epochs=args["probe_epochs"],
        task=args["task"],
        **resolved,
    ))


class GradfeatClassifier(_Prepared, GradFeatProtocol):
    """The gradfeat model ``w1ᵀf + ω̄ᵀJw2`` as a lightly benchmark module.

    Arguments as lightly's ``LinearClassifier``, then plain keywords. Fitted with a
    Lightning ``Trainer``, it standardises the features with their training-set
    statistics and trains the linear probe ω̄ for as many epochs (unless ``probe``
    is given) before its own training, so it gives ``benchmarks/eval.py``'s number.

    Args:
        model: A backbone whose forward returns ``(B, d)`` features, or a whole SSL
            module (lightly's methods) whose forward does; θ2 is then looked for in
            ``model.backbone`` unless ``split`` names it.
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate (the paper's Adam: 1e-3).
        feature_dim: ``d``; checked against the model when given.
        num_classes: Number of classes (labels, for multi-label tasks).
        topk: Top-k accuracies to log.
        split: θ2 module name(s) inside ``model``; default: the top block.
        probe: ω̄ of raw features: ``(weight, bias)``, an ``nn.Linear`` or a trained
            lightly ``LinearClassifier``; ``None`` fits it at the start of training.
        probe_epochs: Epochs of that fit; ``None`` takes the Trainer's.
        optimizer: ``adam`` or ``sgd``.
        standardize: Standardise the features (as the command line does).
        task: ``multiclass`` or ``multilabel``.
        seed: Seed of the probe's fit; ``None`` takes ``seed_everything``'s.
        cfg: An fvcore config whose values the keywords override (optional).
        **hyperparameters: ``betas``, ``weight_decay``, ``momentum``, ``lr_decay``,
            ``lr_decay_every``, ``scale_lr``, ``fold_bn``, ``ntk``, ``engine``,
            ``cache_batch_size``.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> model = GradfeatClassifier(BiGANEncoder(width=8), batch_size_per_device=64,
    ...                            num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int,
        lr: float | None = None,
        feature_dim: int | None = None,
        num_classes: int = 1000,
        topk: Sequence[int] = (1, 5),
        *,
        split: str | Sequence[str] | None = None,
        probe: Any = None,
        probe_epochs: int | None = None,
        optimizer: str | None = None,
        standardize: bool | None = None,
        task: str = "multiclass",
        seed: int | None = None,
        cfg: CfgNode | None = None,
        **hyperparameters: Any,
    ) -> None:
        _init_linear_model(self, {k: v for k, v in locals().items() if k != "self"})

class GradClassifier(_Prepared, GradProtocol):
    """The gradient baseline ``ω̄ᵀJw2 + b`` as a lightly benchmark module.

    Same arguments and behaviour as :class:`GradfeatClassifier`.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> model = GradClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int,
        lr: float | None = None,
        feature_dim: int | None = None,
        num_classes: int = 1000,
        topk: Sequence[int] = (1, 5),
        *,
        split: str | Sequence[str] | None = None,
        probe: Any = None,
        probe_epochs: int | None = None,
        optimizer: str | None = None,
        standardize: bool | None = None,
        task: str = "multiclass",
        seed: int | None = None,
        cfg: CfgNode | None = None,
        **hyperparameters: Any,
    ) -> None:
        _init_linear_model(self, {k: v for k, v in locals().items() if k != "self"})



class FinetuneClassifier(FinetuneProtocol):
    """Fine-tuning of θ2 and a linear head as a lightly benchmark module.

    Arguments as lightly's ``FinetuneClassifier``, then plain keywords: θ1 stays
    frozen in eval mode, the gradient norm is clipped at ``clip_grad_norm`` (10, as
    in the authors' code), and the paper's Adam is the default optimiser.

    Args:
        model: A backbone, or a whole SSL module (θ2 found in ``model.backbone``).
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate.
        feature_dim: ``d``; checked against the model when given.
        num_classes: Number of classes.
        topk: Top-k accuracies to log.
        split: θ2 module name(s); default: the top block.
        optimizer: ``adam`` or ``sgd``.
        whole_network: Train every parameter, θ1 included.
        task: ``multiclass`` or ``multilabel``.
        cfg: An fvcore config whose values the keywords override (optional).
        **hyperparameters: ``betas``, ``weight_decay``, ``momentum``, ``lr_decay``,
            ``lr_decay_every``, ``scale_lr``, ``clip_grad_norm``.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> model = FinetuneClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int,
        lr: float | None = None,
        feature_dim: int | None = None,
        num_classes: int = 1000,
        topk: Sequence[int] = (1, 5),
        *,
        split: str | Sequence[str] | None = None,
        optimizer: str | None = None,
        whole_network: bool = False,
        task: str = "multiclass",
        cfg: CfgNode | None = None,
        **hyperparameters: Any,
    ) -> None:
        config, resolved = build_config(cfg, lr=lr, optimizer=optimizer, **hyperparameters)
        config.FINETUNE.WHOLE_NETWORK = whole_network
        split = resolve_split(model, whole_module_split(model, split))
        super().__init__(
            model, num_classes, config, task=task, optimizer=resolved["optimizer"],
            split=split, batch_size_per_device=batch_size_per_device,
        )
        _check_feature_dim(feature_dim, self.classification_head.in_features)
        self.topk = _topk(topk, num_classes)
        _save_plain_hyperparameters(self, dict(
            batch_size_per_device=batch_size_per_device,
            feature_dim=self.classification_head.in_features,
            num_classes=num_classes,
            topk=list(topk),
            split=list(split),
            whole_network=whole_network,
            task=task,
            **resolved,
        ))
