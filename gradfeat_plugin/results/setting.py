"""The evaluation setting of a stored result: its config without the seed and the
keys that do not change a number. Seeds are averaged only within one setting.

A record's setting is resolved against its own columns (the weights, the θ2 split
and the input size it ran with), and narrowed to the keys that can change its
protocol's number (:func:`protocol_setting`): a fine-tuning key does not tell two
linear probes apart. :func:`setting_words` says a key's value as a reader would."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import get_cfg
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
IMPLIED_VALUES: dict[str, Any] = {
    "DATA.CACHE_DTYPE": "float32",
    # Before the validation split, choices were made on the test split.
    "DATA.VAL_FRACTION": 0.0,
    "TRAIN.LR_SWEEP": [],
    "TRAIN.CLIP_GRAD_NORM": 0.0,
    "TRAIN.LR_BY_PROTOCOL.LINEAR": None,
    "TRAIN.LR_BY_PROTOCOL.GRAD": None,
    "TRAIN.LR_BY_PROTOCOL.GRADFEAT": None,
    "TRAIN.LR_BY_PROTOCOL.FINETUNE": None,
    "GRAD.BIAS": True,
    "MODEL.NTK_HEAD": False,
    # Fine-tuning's head started from nn.Linear's initialisation.
    "FINETUNE.HEAD_INIT": "random",
    "FINETUNE.FOLD_BN": False,
    "MODEL.MEAN": None,
    "MODEL.STD": None,
    "MODEL.KWARGS": {},
    "LINEAR.NTK_HEAD": None,
    "LINEAR.WEIGHT_DECAY": None,
    "LINEAR.EPOCHS": None,
    "LINEAR.LR_DECAY_EVERY": None,
    "ABLATION.INIT": "default",
}
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


def default_setting() -> dict[str, str]:
    """The defaults' config as a setting: flat key -> JSON value."""
    return {
        key: json.dumps(value, sort_keys=True, default=str)
        for key, value in _flatten(get_cfg()).items()
    }


def _shown(value: str) -> str:
    parsed = json.loads(value)
    if isinstance(parsed, list):
        return ",".join(str(item) for item in parsed) or "[]"
    return str(parsed)


def _noted_value(key: str, values: Mapping[str, str]) -> str:
    """A key's value in a note: its own, the value a config without the key had
    (:data:`IMPLIED_VALUES`), else ``unset``."""
    if key in values:
        return _shown(values[key])
    implied = IMPLIED_VALUES.get(key, ...)
    return "unset" if implied is ... else _shown(json.dumps(implied))


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
        shown = [f"{key}={_noted_value(key, values)}" for key in differing]
        if len(shown) > MAX_LABEL_KEYS:
            rest = len(shown) - MAX_LABEL_KEYS + 1
            shown = shown[: MAX_LABEL_KEYS - 1] + [f"+{rest} more"]
        notes[setting] = shown
    return notes



#: The protocols whose numbers config keys can change, when not every protocol's:
#: the longest prefix of a key that is listed wins. Protocols not named here
#: (plugins) count every key.
TRAINED_PROTOCOLS = frozenset({"linear", "grad", "gradfeat", "finetune"})
KNOWN_PROTOCOLS = TRAINED_PROTOCOLS | {"knn"}
KEY_PROTOCOLS: dict[str, frozenset[str]] = {
    # kNN trains nothing: no optimiser, schedule, epochs or standardisation.
    "TRAIN.": TRAINED_PROTOCOLS,
    "TRAIN.BATCH_SIZE": KNOWN_PROTOCOLS,
    "ADAM.": TRAINED_PROTOCOLS,
    "MODEL.NTK_HEAD": TRAINED_PROTOCOLS,
    # ω̄ of grad and gradfeat, and fine-tuning's first head, are the linear probe.
    "TRAIN.LR_BY_PROTOCOL.LINEAR": TRAINED_PROTOCOLS,
    "TRAIN.LR_BY_PROTOCOL.GRAD": frozenset({"grad"}),
    "TRAIN.LR_BY_PROTOCOL.GRADFEAT": frozenset({"gradfeat"}),
    "TRAIN.LR_BY_PROTOCOL.FINETUNE": frozenset({"finetune"}),
    "SGD.": frozenset({"finetune"}),
    "FINETUNE.": frozenset({"finetune"}),
    "GRAD.": frozenset({"grad"}),
    "ABLATION.": frozenset({"grad", "gradfeat"}),
    # The linear probe and kNN read the whole network's features wherever θ2 starts.
    "MODEL.SPLIT": frozenset({"grad", "gradfeat", "finetune"}),
    "KNN.": frozenset({"knn"}),
}
#: A key missing from a stored config that has no implied value.
UNSET = '"<unset>"'


def key_protocols(key: str, setting: Mapping[str, str]) -> frozenset[str] | None:
    """The known protocols whose numbers ``key`` can change under ``setting``, or
    ``None`` for every protocol."""
    if key.startswith("SGD.") and setting.get("TRAIN.OPTIMIZER") == '"sgd"':
        return TRAINED_PROTOCOLS
    prefixes = [p for p in KEY_PROTOCOLS if key == p or (p.endswith(".") and
                                                          key.startswith(p))]
    return KEY_PROTOCOLS[max(prefixes, key=len)] if prefixes else None


def protocol_setting(setting: Mapping[str, str], protocol: str) -> dict[str, str]:
    """The part of a resolved setting that can change ``protocol``'s number.

    >>> protocol_setting({"KNN.K": "20", "TRAIN.LR": "0.01"}, "knn")
    {'KNN.K': '20'}
    """
    if protocol not in KNOWN_PROTOCOLS:
        return dict(setting)
    return {
        key: value for key, value in setting.items()
        if (owners := key_protocols(key, setting)) is None or protocol in owners
    }


def _ablation_from_weights(weights: str) -> dict[str, str]:
    """The Table 1 ablation a weights column names (``pretrained; θ1=random ...``)."""
    parts = {"θ1": "THETA1", "θ2": "THETA2", "ω": "PROBE"}
    named = dict(item.split("=", 1) for item in weights.partition("; ")[2].split()
                 if "=" in item)
    return {f"ABLATION.{parts[k]}": json.dumps(v)
            for k, v in named.items() if k in parts}


def resolved_setting(record: Mapping[str, Any]) -> dict[str, str]:
    """A record's setting (:func:`setting_of_config`) with what its columns say the
    run used: ``MODEL.WEIGHTS`` from the weights column (without the ablation, which
    is ``ABLATION.*``), ``MODEL.SPLIT`` from the θ2 split it ran with, and
    ``MODEL.INPUT_SIZE`` from the input size it ran with, when stored. A config that
    names the default θ2 and one that leaves it empty are then one setting.

    Args:
        record: A stored record (``weights``, ``split``, ``config``, ``extra``).
    """
    setting = dict(setting_of_config(record.get("config")))
    weights = str(record.get("weights") or "")
    setting["MODEL.WEIGHTS"] = json.dumps(weights.partition("; ")[0])
    for key, value in _ablation_from_weights(weights).items():
        setting.setdefault(key, value)
    split = [name for name in str(record.get("split") or "").split(",") if name]
    if split or "MODEL.SPLIT" in setting:
        setting["MODEL.SPLIT"] = json.dumps(split)
    size = (record.get("extra") or {}).get("input_size")
    if size:
        setting["MODEL.INPUT_SIZE"] = json.dumps([int(n) for n in size])
    return setting


def with_unset_keys(setting: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
    """``setting`` with every key of ``keys`` it lacks: its implied value where the
    key was added later (:data:`IMPLIED_VALUES`), else :data:`UNSET`."""
    filled = dict(setting)
    for key in keys:
        if key not in filled:
            implied = IMPLIED_VALUES.get(key, ...)
            filled[key] = UNSET if implied is ... else json.dumps(implied)
    return filled


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_number(v) for v in value)
    return _number(value)


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _input_size(value: Any) -> str:
    if isinstance(value, list):
        return "×".join(str(v) for v in value)
    return str(value)


#: How a reader says a key's value: a format with ``{}`` for the value and the
#: function that writes the value. Other keys read ``KEY = value``.
KEY_WORDS: dict[str, tuple[str, Any]] = {
    "MODEL.WEIGHTS": ("weights {}", lambda v: os.path.basename(v.rstrip("/")) or v),
    "MODEL.SPLIT": ("θ2 = {}", _listed),
    "MODEL.INPUT_SIZE": ("input {}", _input_size),
    "MODEL.WEIGHTS_KEY": ("weights key {}", str),
    "MODEL.NTK": ("NTK {}", _on_off),
    "MODEL.NTK_HEAD": ("NTK head {}", _on_off),
    "MODEL.FOLD_BN": ("BN folding {}", _on_off),
    "ABLATION.THETA1": ("θ1 {}", str),
    "ABLATION.THETA2": ("θ2 {}", str),
    "ABLATION.PROBE": ("ω {}", str),
    "DATA.LABEL_FRACTION": ("{} % labels", lambda v: f"{100 * float(v):g}"),
    "DATA.VAL_FRACTION": ("{} % validation", lambda v: f"{100 * float(v):g}"),
    "DATA.AUGMENT": ("augmentation {}", _on_off),
    "DATA.CACHE_DTYPE": ("θ1 outputs in {}", str),
    "TRAIN.EPOCHS": ("{} epochs", str),
    "TRAIN.BATCH_SIZE": ("batch {}", str),
    "TRAIN.LR": ("lr {}", _number),
    "TRAIN.LR_SWEEP": ("lr sweep {}", _listed),
    "TRAIN.OPTIMIZER": ("optimiser {}", str),
    "TRAIN.STANDARDIZE_FEATURES": ("standardised features {}", _on_off),
    "TRAIN.CLIP_GRAD_NORM": ("clip {}", _number),
    "TRAIN.LR_BY_PROTOCOL.LINEAR": ("linear lr {}", _number),
    "TRAIN.LR_BY_PROTOCOL.GRAD": ("grad lr {}", _number),
    "TRAIN.LR_BY_PROTOCOL.GRADFEAT": ("gradfeat lr {}", _number),
    "TRAIN.LR_BY_PROTOCOL.FINETUNE": ("fine-tuning lr {}", _number),
    "FINETUNE.OPTIMIZERS": ("fine-tuning with {}", _listed),
    "FINETUNE.HEAD_INIT": ("fine-tuning head {}", str),
    "FINETUNE.WHOLE_NETWORK": ("fine-tuning the whole network {}", _on_off),
    "FINETUNE.CLIP_GRAD_NORM": ("fine-tuning clip {}", _number),
    "GRAD.BIAS": ("grad bias {}", _on_off),
    "KNN.K": ("kNN k {}", str),
}


def setting_words(key: str, value: str) -> str:
    """One key's value as a reader says it; an empty or ``null`` value reads
    ``default``, a key the stored config lacks ``unset``.

    Args:
        key: A flat config key, e.g. ``DATA.LABEL_FRACTION``.
        value: Its JSON value as in a setting, e.g. ``"0.1"``.

    >>> setting_words("DATA.LABEL_FRACTION", "0.1")
    '10 % labels'
    >>> setting_words("TRAIN.LR_BY_PROTOCOL.FINETUNE", "null")
    'fine-tuning lr default'
    >>> setting_words("MODEL.SPLIT", '["conv4", "conv5"]')
    'θ2 = conv4, conv5'
    >>> setting_words("PRETRAIN.LR", "0.002")
    'PRETRAIN.LR = 0.002'
    """
    template, say = KEY_WORDS.get(key, (f"{key} = {{}}", _listed))
    if value == UNSET:
        return template.format("unset")
    parsed = json.loads(value)
    if parsed is None or parsed == "" or parsed == []:
        return template.format("default")
    return template.format(say(parsed))


#: The order keys are said in a label: these first, then the rest alphabetically.
WORD_ORDER = (
    "MODEL.WEIGHTS", "MODEL.SPLIT", "ABLATION.THETA1", "ABLATION.THETA2",
    "ABLATION.PROBE", "MODEL.INPUT_SIZE", "DATA.LABEL_FRACTION",
)


def word_order(key: str) -> tuple[int, str]:
    """Sort key of :data:`WORD_ORDER`."""
    return (WORD_ORDER.index(key) if key in WORD_ORDER else len(WORD_ORDER), key)
