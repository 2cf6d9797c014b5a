"""Every config value checked before any work: types, ranges and choices."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from fvcore.common.config import CfgNode

from ..data.transforms import normalization
from ..errors import GradfeatError
from ..linearize._engines import ENGINES
from ..linearize._reinit import INITS
from ..protocols._cache import CACHE_DTYPES, CACHE_POLICIES
from ..protocols.finetune import HEAD_INITS

OPTIMIZERS = ("adam", "sgd")
ABLATION_CHOICES = ("pretrained", "random")
ENGINE_CHOICES = ("auto", *ENGINES)
# torch's seed range (seed_everything refuses anything outside it).
MAX_SEED = 2**32 - 1


def _fail(key: str, value: Any, want: str) -> GradfeatError:
    return GradfeatError(f"bad config: {key} must be {want}, got {value!r}")


def _integer(key: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, "an integer")
    if value < low or (high is not None and value > high):
        within = f"an integer from {low} to {high}"
        raise _fail(key, value, within if high is not None else f"at least {low}")


def _number(
    key: str, value: Any, low: float, high: float = math.inf,
    low_open: bool = False, high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, value, "a number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        raise _fail(key, value, f"a finite number in {left}{low:g}, {high:g}{right}")


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _fail(key, value, f"one of {', '.join(choices)}")


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(key, value, "a non-empty name")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, value, "True or False")


def _pair(key: str, value: Any, check: Callable[[str, Any], None]) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(key, value, "a pair of numbers")
    for index, item in enumerate(value):
        check(f"{key}[{index}]", item)


def _optimizer_list(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(key, value, f"a non-empty list of {', '.join(OPTIMIZERS)}")
    for item in value:
        _choice(key, item, OPTIMIZERS)
    if len(set(value)) != len(value):
        raise _fail(key, value, "a list without repeats")


def _lightning_choices() -> tuple[list[str], list[str], list[str]]:
    """Accelerator, strategy and precision names the installed Lightning accepts."""
    from typing import get_args

    from lightning_fabric.connector import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    registered = sorted(AcceleratorRegistry.available_accelerators())
    accelerators = ["auto", "gpu", *registered]
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    precisions = [*get_args(_PRECISION_INPUT_STR)]
    precisions += get_args(_PRECISION_INPUT_STR_ALIAS)
    return accelerators, strategies, precisions


#: Constructor keywords the run sets itself.
RESERVED_MODEL_KWARGS = {
    "pretrained": "--weights",
    "num_classes": "nothing: the backbone's classifier is removed",
}


def _model_kwargs(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _fail(key, value, "a mapping of constructor keywords")
    for name, item in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _fail(key, name, "keyword names")
        if name in RESERVED_MODEL_KWARGS:
            raise GradfeatError(
                f"bad config: {key} may not set {name}; use "
                f"{RESERVED_MODEL_KWARGS[name]}"
            )
        items = item if isinstance(item, (list, tuple)) else [item]
        if not all(isinstance(v, (bool, int, float, str, type(None))) for v in items):
            raise _fail(f"{key}.{name}", item, "a number, bool, name or list of those")


def _positive_int(key: str, value: Any) -> None:
    _integer(key, value, 1)


def _probability(key: str, value: Any) -> None:
    _number(key, value, 0.0, 1.0)


def _beta(key: str, value: Any) -> None:
    _number(key, value, 0.0, 1.0, high_open=True)


def _positive(key: str, value: Any) -> None:
    _number(key, value, 0.0, low_open=True)


def _non_negative(key: str, value: Any) -> None:
    _number(key, value, 0.0)


def validate_config(cfg: CfgNode) -> None:
    """Check every value of a run's config against its type, range or choices.

    Called by the command lines right after the config is merged and by
    :func:`gradfeat_plugin.evaluate.evaluate`, so that nothing is built, trained or
    written for a config that cannot give a right number (a zero learning rate, an
    empty optimiser list, a batch of 0, an unknown precision, ...).

    Args:
        cfg: The merged config.

    Raises:
        GradfeatError: The first bad value, named by its key.

    >>> from gradfeat_plugin.config import get_cfg
    >>> cfg = get_cfg()
    >>> cfg.TRAIN.LR = 0.0
    >>> validate_config(cfg)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gradfeat_plugin.errors.GradfeatError: bad config: TRAIN.LR must be ..., got 0.0
    """
    m, d, t, trainer = cfg.MODEL, cfg.DATA, cfg.TRAIN, cfg.TRAINER
    _text("MODEL.SPEC", m.SPEC)
    _text("MODEL.WEIGHTS", m.WEIGHTS)
    if not isinstance(m.SPLIT, (list, tuple)):
        raise _fail("MODEL.SPLIT", m.SPLIT, "a list of module names")
    for name in m.SPLIT:
        _text("MODEL.SPLIT", name)
    _model_kwargs("MODEL.KWARGS", m.KWARGS)
    normalization(m.MEAN, "mean")
    normalization(m.STD, "std")
    _flag("MODEL.FOLD_BN", m.FOLD_BN)
    _flag("MODEL.NTK", m.NTK)
    _flag("MODEL.NTK_HEAD", m.NTK_HEAD)
    _choice("MODEL.ENGINE", m.ENGINE, ENGINE_CHOICES)
    _flag("MODEL.ALLOW_PARTIAL_WEIGHTS", m.ALLOW_PARTIAL_WEIGHTS)

    _text("DATA.DATASET", d.DATASET)
    _number("DATA.LABEL_FRACTION", d.LABEL_FRACTION, 0.0, 1.0, low_open=True)
    _number("DATA.VAL_FRACTION", d.VAL_FRACTION, 0.0, 1.0, high_open=True)
    _flag("DATA.AUGMENT", d.AUGMENT)
    _integer("DATA.NUM_WORKERS", d.NUM_WORKERS, -1, 256)
    _choice("DATA.CACHE", d.CACHE, CACHE_POLICIES)
    if not isinstance(d.CACHE_DIR, str) or "\x00" in d.CACHE_DIR:
        raise _fail("DATA.CACHE_DIR", d.CACHE_DIR, "a folder path")
    _choice("DATA.CACHE_DTYPE", d.CACHE_DTYPE, tuple(CACHE_DTYPES))

    _positive_int("TRAIN.EPOCHS", t.EPOCHS)
    _positive_int("TRAIN.BATCH_SIZE", t.BATCH_SIZE)
    _integer("TRAIN.SEED", t.SEED, 0, MAX_SEED)
    _choice("TRAIN.OPTIMIZER", t.OPTIMIZER, OPTIMIZERS)
    _positive("TRAIN.LR", t.LR)
    _flag("TRAIN.SCALE_LR", t.SCALE_LR)
    _number("TRAIN.LR_DECAY", t.LR_DECAY, 0.0, 1.0, low_open=True)
    _number("TRAIN.LR_DECAY_EVERY", t.LR_DECAY_EVERY, 0.0, 1.0, low_open=True)
    _flag("TRAIN.STANDARDIZE_FEATURES", t.STANDARDIZE_FEATURES)
    _flag("TRAIN.CACHE_FEATURES", t.CACHE_FEATURES)
    _positive_int("TRAIN.CACHE_BATCH_SIZE", t.CACHE_BATCH_SIZE)
    _integer("TRAIN.VAL_EVERY_N_EPOCHS", t.VAL_EVERY_N_EPOCHS, 0)
    _non_negative("TRAIN.CLIP_GRAD_NORM", t.CLIP_GRAD_NORM)
    for name, lr in t.LR_BY_PROTOCOL.items():
        if lr is not None:
            _positive(f"TRAIN.LR_BY_PROTOCOL.{name}", lr)
    if not isinstance(t.LR_SWEEP, (list, tuple)):
        raise _fail("TRAIN.LR_SWEEP", t.LR_SWEEP, "a list of learning rates")
    for lr in t.LR_SWEEP:
        _positive("TRAIN.LR_SWEEP", lr)

    _pair("ADAM.BETAS", cfg.ADAM.BETAS, _beta)
    _non_negative("ADAM.WEIGHT_DECAY", cfg.ADAM.WEIGHT_DECAY)
    _beta("SGD.MOMENTUM", cfg.SGD.MOMENTUM)
    _non_negative("SGD.WEIGHT_DECAY", cfg.SGD.WEIGHT_DECAY)
    linear = cfg.LINEAR
    if linear.NTK_HEAD is not None:
        _flag("LINEAR.NTK_HEAD", linear.NTK_HEAD)
    if linear.WEIGHT_DECAY is not None:
        _non_negative("LINEAR.WEIGHT_DECAY", linear.WEIGHT_DECAY)
    if linear.EPOCHS is not None:
        _positive_int("LINEAR.EPOCHS", linear.EPOCHS)
    if linear.LR_DECAY_EVERY is not None:
        _number("LINEAR.LR_DECAY_EVERY", linear.LR_DECAY_EVERY, 0.0, 1.0, low_open=True)
    _flag("FINETUNE.WHOLE_NETWORK", cfg.FINETUNE.WHOLE_NETWORK)
    _optimizer_list("FINETUNE.OPTIMIZERS", cfg.FINETUNE.OPTIMIZERS)
    _non_negative("FINETUNE.CLIP_GRAD_NORM", cfg.FINETUNE.CLIP_GRAD_NORM)
    _choice("FINETUNE.HEAD_INIT", cfg.FINETUNE.HEAD_INIT, HEAD_INITS)
    _flag("FINETUNE.FOLD_BN", cfg.FINETUNE.FOLD_BN)
    _flag("GRAD.BIAS", cfg.GRAD.BIAS)
    for part in ("THETA1", "THETA2", "PROBE"):
        _choice(f"ABLATION.{part}", cfg.ABLATION[part], ABLATION_CHOICES)
    _choice("ABLATION.INIT", cfg.ABLATION.INIT, INITS)

    _positive_int("KNN.K", cfg.KNN.K)
    _positive("KNN.TEMPERATURE", cfg.KNN.TEMPERATURE)
    _flag("KNN.NORMALIZE", cfg.KNN.NORMALIZE)

    accelerators, strategies, precisions = _lightning_choices()
    _choice("TRAINER.ACCELERATOR", trainer.ACCELERATOR, accelerators)
    if trainer.DEVICES != -1:
        _integer("TRAINER.DEVICES", trainer.DEVICES, 1, 4096)
    _integer("TRAINER.NUM_NODES", trainer.NUM_NODES, 1, 4096)
    _choice("TRAINER.STRATEGY", trainer.STRATEGY, strategies)
    _choice("TRAINER.PRECISION", str(trainer.PRECISION), precisions)
    if not isinstance(cfg.RESULTS.PATH, str) or "\x00" in cfg.RESULTS.PATH:
        raise _fail("RESULTS.PATH", cfg.RESULTS.PATH, "a file path")

    p = cfg.PRETRAIN
    _positive_int("PRETRAIN.BATCH_SIZE", p.BATCH_SIZE)
    _positive("PRETRAIN.LR", p.LR)
    _non_negative("PRETRAIN.WEIGHT_DECAY", p.WEIGHT_DECAY)
    _integer("PRETRAIN.MAX_SAMPLES", p.MAX_SAMPLES, 0)
    _positive_int("PRETRAIN.BIGAN.LATENT_DIM", p.BIGAN.LATENT_DIM)
    _positive_int("PRETRAIN.BIGAN.WIDTH", p.BIGAN.WIDTH)
    _positive("PRETRAIN.BIGAN.LR", p.BIGAN.LR)
    _pair("PRETRAIN.BIGAN.BETAS", p.BIGAN.BETAS, _beta)
    _beta("PRETRAIN.BIGAN.DROPOUT", p.BIGAN.DROPOUT)
    _positive("PRETRAIN.SIMCLR.TEMPERATURE", p.SIMCLR.TEMPERATURE)
    _positive_int("PRETRAIN.SIMCLR.HIDDEN_DIM", p.SIMCLR.HIDDEN_DIM)
    _positive_int("PRETRAIN.SIMCLR.OUTPUT_DIM", p.SIMCLR.OUTPUT_DIM)
    _number("PRETRAIN.SIMCLR.MIN_SCALE", p.SIMCLR.MIN_SCALE, 0.0, 1.0, low_open=True)
    _probability("PRETRAIN.SIMCLR.CJ_PROB", p.SIMCLR.CJ_PROB)
    _non_negative("PRETRAIN.SIMCLR.CJ_STRENGTH", p.SIMCLR.CJ_STRENGTH)
    _probability("PRETRAIN.SIMCLR.BLUR_PROB", p.SIMCLR.BLUR_PROB)
    _pair("PRETRAIN.SIMCLR.BLUR_SIGMAS", p.SIMCLR.BLUR_SIGMAS, _positive)
    if p.SIMCLR.BLUR_SIGMAS[0] > p.SIMCLR.BLUR_SIGMAS[1]:
        raise _fail("PRETRAIN.SIMCLR.BLUR_SIGMAS", p.SIMCLR.BLUR_SIGMAS, "(low, high)")
