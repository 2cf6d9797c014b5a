"""Hand-made result records shared by the results tests."""

from __future__ import annotations

from typing import Any

from gradfeat_plugin.config import get_cfg


def make_run(
    values: dict[str, float], model: str = "zoo:tiny", weights: str = "pretrained",
    dataset: str = "mnist5k", seed: int = 0, **fields: Any,
) -> list[dict[str, Any]]:
    """One run's records: one per protocol, with ``values`` as fractions."""
    return [
        dict(model=model, weights=weights, dataset=dataset, protocol=protocol,
             metric="val_top1", value=value, seed=seed, **fields)
        for protocol, value in values.items()
    ]


def make_config(**changes: Any) -> str:
    """The defaults' YAML with ``changes`` (``TRAIN__LR_BY_PROTOCOL__FINETUNE=0.1``)."""
    cfg = get_cfg()
    for key, value in changes.items():
        *sections, name = key.split("__")
        node = cfg
        for section in sections:
            node = node[section]
        node[name] = value
    return cfg.dump()
