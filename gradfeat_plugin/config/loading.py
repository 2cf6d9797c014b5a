"""Build a run's config: defaults, then a YAML file (with ``_BASE_``), then overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from fvcore.common.config import CfgNode

from ..errors import GradfeatError
from .defaults import get_cfg
from .safe_yaml import YAML_SUFFIXES, load_yaml_with_base
from .validate import validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _resolve_file(path: str) -> Path:
    if Path(path).suffix not in ("", *YAML_SUFFIXES):
        raise GradfeatError(f"config file {path!r} must be YAML (.yaml or .yml)")
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / path
    for name in (shipped, shipped.with_suffix(".yaml")):
        if name.is_file():
            return name
    raise GradfeatError(
        f"config file {path!r} not found (also looked in {CONFIG_DIR}); "
        "give a path to a YAML file"
    )


def dataset_config(dataset: str) -> str | None:
    """The shipped per-dataset defaults (``configs/datasets/NAME.yaml``), if any."""
    path = CONFIG_DIR / "datasets" / f"{dataset}.yaml"
    return str(path) if path.is_file() else None


def load_config(
    config_file: str | None = None,
    opts: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> CfgNode:
    """Merge the defaults, an optional YAML file, flag overrides and ``KEY VALUE`` pairs.

    The file is read with the limits of :mod:`.safe_yaml` and the result is checked
    by :func:`validate_config`.

    Args:
        config_file: A YAML path, or the name of a file in ``configs/``.
        opts: Flat ``KEY VALUE`` list, e.g. ``["TRAIN.LR", "0.01"]``; applied last.
        overrides: ``{"TRAIN.EPOCHS": 5}`` from command-line flags; ``None`` values
            are skipped. Applied after the file and before ``opts``.

    Returns:
        The frozen config.

    Raises:
        GradfeatError: Missing, malformed or oversized file, a ``_BASE_`` cycle,
            unknown key, or a value of the wrong type or out of range.

    >>> load_config(opts=["TRAIN.EPOCHS", "3"]).TRAIN.EPOCHS
    3
    """
    cfg = get_cfg()
    try:
        if config_file:
            loaded = load_yaml_with_base(_resolve_file(config_file))
            cfg.merge_from_other_cfg(CfgNode(loaded))
        pairs: list[Any] = []
        for key, value in (overrides or {}).items():
            if value is not None:
                pairs += [key, value]
        cfg.merge_from_list(pairs)
        if len(opts) % 2:
            raise GradfeatError(f"overrides must be KEY VALUE pairs, got {list(opts)}")
        cfg.merge_from_list(list(opts))
    except GradfeatError:
        raise
    except FileNotFoundError as exc:
        raise GradfeatError(f"config file not found: {exc.filename}") from None
    except yaml.YAMLError as exc:
        raise GradfeatError(f"config file is not valid YAML: {' '.join(str(exc).split())}") from None
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        message = " ".join(str(exc.args[0] if exc.args else exc).split())
        raise GradfeatError(f"bad config: {message}") from None
    validate_config(cfg)
    cfg.freeze()
    return cfg

