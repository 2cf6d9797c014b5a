"""The one place the merged config becomes the protocols' plain keywords.

Below this module nothing reads the config: protocol classes, the cache and the
run take plain values (see :class:`~gradfeat_plugin.protocols.settings.RunSettings`).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from fvcore.common.config import CfgNode

from ..errors import GradfeatError

#: Keywords the run itself gives every protocol (besides those below).
RUN_KEYWORDS = ("model", "num_classes", "task", "cached", "split", "batch_size_per_device")


def _ablation(cfg: CfgNode, key: str) -> bool:
    value = cfg.ABLATION[key]
    if value not in ("pretrained", "random"):
        raise GradfeatError(f"ABLATION.{key} must be pretrained or random, got {value!r}")
    return value == "random"


def _lr(cfg: CfgNode, name: str) -> float:
    """``TRAIN.LR_BY_PROTOCOL.<NAME>`` when set, else ``TRAIN.LR``."""
    by_protocol = cfg.TRAIN.get("LR_BY_PROTOCOL") or {}
    lr = by_protocol.get(name.upper())
    return cfg.TRAIN.LR if lr is None else lr


def _linear(cfg: CfgNode, key: str, general: Any) -> Any:
    """``LINEAR.<KEY>`` when set, else the general value."""
    value = cfg.LINEAR.get(key)
    return general if value is None else value


def _accepts(cls: type) -> tuple[set[str], bool]:
    """The keyword names ``cls`` takes, and whether it takes any (``**kwargs``)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _filtered(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names, takes_any = _accepts(cls)
    if takes_any:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in names}


def protocol_kwargs(cfg: CfgNode, name: str, optimizer: str | None = None) -> dict[str, Any]:
    """The keywords protocol ``name`` is built with under ``cfg``.

    Every protocol gets the optimiser's settings (``lr`` from
    ``TRAIN.LR_BY_PROTOCOL.<NAME>`` or ``TRAIN.LR``, ``betas``, ``weight_decay`` of
    the optimiser, ``momentum``, the schedule, clipping, ``seed``) as far as its
    class takes them; the built-ins get their own keys too (the linearisation,
    the ablation, the linear probe's, fine-tuning's and kNN's sections). The run
    adds ``model``, ``num_classes``, ``task``, ``cached``, ``split`` and
    ``batch_size_per_device``.

    Args:
        cfg: The merged config.
        name: A registered protocol name.
        optimizer: The optimiser of this run of the protocol; ``None``:
            ``TRAIN.OPTIMIZER``.

    >>> from gradfeat_plugin.config import get_cfg
    >>> cfg = get_cfg()
    >>> cfg.TRAIN.LR_BY_PROTOCOL.GRADFEAT = 0.1
    >>> kwargs = protocol_kwargs(cfg, "gradfeat")
    >>> kwargs["lr"], kwargs["weight_decay"], protocol_kwargs(cfg, "finetune", "sgd")["weight_decay"]
    (0.1, 1e-06, 5e-05)
    """
    from ..protocols import (
        FinetuneClassifier,
        GradClassifier,
        GradfeatClassifier,
        KNNFeatureClassifier,
        LinearProbeClassifier,
        get_protocol_class,
    )

    cls = get_protocol_class(name)
    if issubclass(cls, KNNFeatureClassifier):
        return dict(knn_k=cfg.KNN.K, knn_t=cfg.KNN.TEMPERATURE, normalize=cfg.KNN.NORMALIZE)
    optimizer = optimizer or cfg.TRAIN.OPTIMIZER
    weight_decay = cfg.SGD.WEIGHT_DECAY if optimizer == "sgd" else cfg.ADAM.WEIGHT_DECAY
    # The linear probe's own settings (LINEAR.*), for the linear protocol and for
    # the probe grad and gradfeat fit when they are given none.
    probe = dict(
        ntk_head=bool(_linear(cfg, "NTK_HEAD", cfg.MODEL.NTK_HEAD)),
        weight_decay=_linear(cfg, "WEIGHT_DECAY", weight_decay),
        lr_decay_every=_linear(cfg, "LR_DECAY_EVERY", cfg.TRAIN.LR_DECAY_EVERY),
    )
    kwargs: dict[str, Any] = dict(
        lr=_lr(cfg, name),
        optimizer=optimizer,
        betas=list(cfg.ADAM.BETAS),
        weight_decay=weight_decay,
        momentum=cfg.SGD.MOMENTUM,
        scale_lr=cfg.TRAIN.SCALE_LR,
        lr_decay=cfg.TRAIN.LR_DECAY,
        lr_decay_every=cfg.TRAIN.LR_DECAY_EVERY,
        clip_grad_norm=float(cfg.TRAIN.get("CLIP_GRAD_NORM", 0.0)),
        seed=int(cfg.TRAIN.SEED),
    )
    if issubclass(cls, (LinearProbeClassifier, GradfeatClassifier)):
        kwargs.update(
            fold_bn=cfg.MODEL.FOLD_BN,
            ntk=cfg.MODEL.NTK,
            engine=cfg.MODEL.ENGINE,
            ntk_head=bool(cfg.MODEL.NTK_HEAD),
        )
    if issubclass(cls, LinearProbeClassifier):
        kwargs.update(probe)
    if issubclass(cls, GradfeatClassifier):
        kwargs.update(
            standardize=cfg.TRAIN.STANDARDIZE_FEATURES,
            random_theta1=_ablation(cfg, "THETA1"),
            random_theta2=_ablation(cfg, "THETA2"),
            random_probe=_ablation(cfg, "PROBE"),
            random_init=cfg.ABLATION.INIT,
            cache_batch_size=cfg.TRAIN.CACHE_BATCH_SIZE,
            probe_lr=_lr(cfg, "linear"),
            probe_epochs=cfg.LINEAR.EPOCHS,
            # None: the probe's setting is the protocol's own, as the class says.
            probe_ntk_head=cfg.LINEAR.NTK_HEAD,
            probe_weight_decay=cfg.LINEAR.WEIGHT_DECAY,
            probe_lr_decay_every=cfg.LINEAR.LR_DECAY_EVERY,
        )
    if issubclass(cls, GradClassifier):
        kwargs["bias"] = bool(cfg.GRAD.BIAS)
    if issubclass(cls, FinetuneClassifier):
        kwargs.update(
            whole_network=bool(cfg.FINETUNE.WHOLE_NETWORK),
            clip_grad_norm=float(cfg.FINETUNE.CLIP_GRAD_NORM),
            head_init=cfg.FINETUNE.HEAD_INIT,
            fold_bn=bool(cfg.FINETUNE.FOLD_BN),
        )
    return _filtered(cls, kwargs)


def class_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults a protocol class uses for what it is not given: its
    own, then those of the bases it passes keywords on to (down to lightly's), with
    ``weight_decay=None`` resolved to the optimiser's default."""
    from ..protocols._base import DEFAULT_WEIGHT_DECAY

    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("lightly", "pytorch_lightning", "torch"):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.default is not p.empty:
                defaults.setdefault(p.name, p.default)
    if "weight_decay" in defaults and defaults["weight_decay"] is None:
        optimizer = defaults.get("optimizer", "adam")
        defaults["weight_decay"] = DEFAULT_WEIGHT_DECAY[optimizer]
    return defaults


def recommended_kwargs(name: str, dataset: str | None = None) -> dict[str, Any]:
    """The keywords in which the command line's protocol ``name`` differs from the
    class at its defaults, on ``dataset`` (its shipped ``configs/datasets/``
    defaults over the package's; ``None``: the package's alone).

    The class built with them (and a ``Trainer`` with ``max_epochs`` set to
    ``TRAIN.EPOCHS`` of ``load_config(dataset_config(dataset))``) trains as
    ``benchmarks/eval.py --dataset DATASET`` does. Everything else already agrees:
    ``tests/config/test_protocol_defaults.py`` pins what these differences are.

    Args:
        name: A registered protocol name.
        dataset: A dataset name, or ``None``.

    >>> recommended_kwargs("gradfeat", "mnist5k")
    {'lr': 0.01}
    >>> recommended_kwargs("finetune", "mnist5k")  # the run installs its probe first
    {'head_init': 'probe'}
    """
    from ..protocols import get_protocol_class
    from ..protocols._base import plain
    from .loading import dataset_config, load_config

    cfg = load_config(dataset_config(dataset) if dataset else None)
    cli = protocol_kwargs(cfg, name)
    defaults = class_defaults(get_protocol_class(name))
    differing = {
        k: v for k, v in cli.items()
        if k != "probe_lr" and (k not in defaults or plain(v) != plain(defaults[k]))
    }
    # The probe's learning rate defaults to the protocol's own (None).
    if "probe_lr" in cli and cli["probe_lr"] != differing.get("lr", cli.get("lr")):
        differing["probe_lr"] = cli["probe_lr"]
    return differing


def protocol_optimizers(cfg: CfgNode, name: str) -> list[str | None]:
    """The optimisers protocol ``name`` runs with (one run each; the best is
    reported): ``FINETUNE.OPTIMIZERS`` for fine-tuning, ``TRAIN.OPTIMIZER`` for the
    others, none for a protocol that takes no ``optimizer`` (kNN)."""
    from ..protocols import FinetuneClassifier, get_protocol_class

    cls = get_protocol_class(name)
    names, takes_any = _accepts(cls)
    if "optimizer" not in names and not takes_any:
        return [None]
    if issubclass(cls, FinetuneClassifier):
        return list(cfg.FINETUNE.OPTIMIZERS)
    return [cfg.TRAIN.OPTIMIZER]


def protocol_settings(cfg: CfgNode, name: str) -> list[dict[str, Any]]:
    """The keyword sets protocol ``name`` runs with, one run each: every optimiser
    of :func:`protocol_optimizers` times every learning rate of ``TRAIN.LR_SWEEP``
    (when the protocol takes an ``lr``). The best on the validation split is
    reported.

    >>> from gradfeat_plugin.config import get_cfg
    >>> cfg = get_cfg()
    >>> cfg.TRAIN.LR_SWEEP = [0.01, 0.1]
    >>> [(s["optimizer"], s["lr"]) for s in protocol_settings(cfg, "finetune")]
    [('adam', 0.01), ('adam', 0.1), ('sgd', 0.01), ('sgd', 0.1)]
    """
    settings = []
    for optimizer in protocol_optimizers(cfg, name):
        kwargs = protocol_kwargs(cfg, name, optimizer)
        if "lr" not in kwargs or not cfg.TRAIN.LR_SWEEP:
            settings.append(kwargs)
            continue
        settings += [dict(kwargs, lr=float(lr)) for lr in cfg.TRAIN.LR_SWEEP]
    return settings


def run_settings(cfg: CfgNode, names: Sequence[str]) -> Any:
    """The :class:`RunSettings` of a run of protocols ``names`` (``all`` allowed)
    under ``cfg``; the linear probe's keywords are always included (ω̄ comes from it)."""
    from ..protocols import CachePolicy, expand_protocols
    from ..protocols.run import PROBE_PROTOCOL
    from ..protocols.settings import RunSettings, TrainerSettings

    planned = expand_protocols(names)
    kwargs = {
        name: protocol_settings(cfg, name) for name in dict.fromkeys([*planned, PROBE_PROTOCOL])
    }
    return RunSettings(
        protocol_kwargs=kwargs,
        trainer=TrainerSettings(
            epochs=cfg.TRAIN.EPOCHS,
            accelerator=cfg.TRAINER.ACCELERATOR,
            devices=cfg.TRAINER.DEVICES,
            num_nodes=cfg.TRAINER.NUM_NODES,
            strategy=cfg.TRAINER.STRATEGY,
            precision=cfg.TRAINER.PRECISION,
            val_every_n_epochs=cfg.TRAIN.VAL_EVERY_N_EPOCHS,
        ),
        protocol_epochs=(
            {} if cfg.LINEAR.EPOCHS is None else {PROBE_PROTOCOL: cfg.LINEAR.EPOCHS}
        ),
        batch_size=cfg.TRAIN.BATCH_SIZE,
        seed=int(cfg.TRAIN.SEED),
        split=list(cfg.MODEL.SPLIT or []),
        fold_bn=cfg.MODEL.FOLD_BN,
        ntk=cfg.MODEL.NTK,
        engine=cfg.MODEL.ENGINE,
        standardize=cfg.TRAIN.STANDARDIZE_FEATURES,
        augment=cfg.DATA.AUGMENT,
        num_workers=cfg.DATA.NUM_WORKERS,
        # TRAIN.CACHE_FEATURES False is the older spelling of DATA.CACHE off.
        cache=CachePolicy(
            cfg.DATA.CACHE if cfg.TRAIN.CACHE_FEATURES else "off",
            cfg.DATA.CACHE_DIR,
            cfg.DATA.CACHE_DTYPE,
        ),
        cache_batch_size=cfg.TRAIN.CACHE_BATCH_SIZE,
    )
