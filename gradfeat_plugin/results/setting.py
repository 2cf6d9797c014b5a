"""The evaluation setting of a stored result: its config without the seed and the
keys that do not change a number. Seeds are averaged only within one setting."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..config.safe_yaml import parse_yaml
from ..errors import GradfeatError

#: Config keys that do not change a result: the seed (averaged over), where results
#: and data live, how many devices and workers ran it, how often it validated.
NON_SETTING_KEYS = frozenset({
    "TRAIN.SEED",
    "RESULTS.PATH",
    "DATA.DATA_DIR",
    "DATA.NUM_WORKERS",
    "DATA.CACHE",
    "DATA.CACHE_DIR",
    "TRAINER.ACCELERATOR",
    "TRAINER.DEVICES",
    "TRAINER.NUM_NODES",
    "TRAINER.STRATEGY",
    "TRAIN.CACHE_BATCH_SIZE",
    "TRAIN.VAL_EVERY_N_EPOCHS",
    "MODEL.ALLOW_PARTIAL_WEIGHTS",
})
#: Keys added after results were stored, with the value those results had: a
#: config that has this value is in the same setting as one without the key.
IMPLIED_VALUES = {"DATA.CACHE_DTYPE": "float32", "MODEL.MEAN": None, "MODEL.STD": None}
#: Keys a leaderboard label already shows through the model, weights, split and
#: dataset columns.
LABELLED_KEYS = frozenset({
    "MODEL.SPEC", "MODEL.WEIGHTS", "MODEL.SPLIT", "DATA.DATASET",
    "ABLATION.THETA1", "ABLATION.THETA2", "ABLATION.PROBE",
})
#: Differing keys spelled out in one label before the rest are counted.
MAX_LABEL_KEYS = 3

Setting = tuple[tuple[str, str], ...]


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@functools.lru_cache(maxsize=256)
def setting_of_config(config: str | None) -> Setting:
    """The setting a stored config text describes, as sorted ``(key, JSON value)``.

    Args:
        config: The YAML config stored with a result (``None`` for results stored
            without one: their setting is empty).

    Raises:
        GradfeatError: The stored config is not a YAML mapping.
    """
    if not config:
        return ()
    data = parse_yaml(config, "stored config")
    if not isinstance(data, Mapping):
        raise GradfeatError("a stored config is not a YAML mapping; repair that row")
    flat = _flatten(data)
    return tuple(sorted(
        (key, json.dumps(value, sort_keys=True, default=str))
        for key, value in flat.items()
        if key not in NON_SETTING_KEYS and IMPLIED_VALUES.get(key, ...) != value
    ))


def _shown(value: str) -> str:
    parsed = json.loads(value)
    if isinstance(parsed, list):
        return ",".join(str(item) for item in parsed) or "[]"
    return str(parsed)


def setting_notes(settings: Sequence[Setting]) -> dict[Setting, list[str]]:
    """For settings that share a model and dataset, the ``KEY=value`` notes that tell
    each apart (keys the label shows otherwise left out). Results stored without a
    config are noted ``no config``.

    Args:
        settings: Distinct settings of one model on one dataset.

    Returns:
        Per setting, its notes (empty when it is the only one).
    """
    as_dicts = [dict(s) for s in settings]
    known = [d for d in as_dicts if d]
    keys = sorted({k for d in known for k in d} - LABELLED_KEYS)
    differing = [k for k in keys if len({d.get(k) for d in known}) > 1]
    notes: dict[Setting, list[str]] = {}
    for setting, values in zip(settings, as_dicts):
        if not values:
            notes[setting] = ["no config"] if len(settings) > 1 else []
            continue
        shown = [
            f"{key}={_shown(values[key]) if key in values else 'unset'}"
            for key in differing
        ]
        if len(shown) > MAX_LABEL_KEYS:
            rest = len(shown) - MAX_LABEL_KEYS + 1
            shown = shown[: MAX_LABEL_KEYS - 1] + [f"+{rest} more"]
        notes[setting] = shown
    return notes

