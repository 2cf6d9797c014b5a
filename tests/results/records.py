"""Hand-made result records shared by the results tests."""

from __future__ import annotations

from typing import Any

from gradfeat_plugin.config import get_cfg

FOUR = dict(linear=0.80, grad=0.84, gradfeat=0.86, finetune=0.90)


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


def study() -> list[dict]:
    """A main setting (30 epochs, all and 10 % of the labels) and a Table 1
    ablation at 10 epochs: two θ2 depths, random θ2, an all-random gradient term
    at one depth."""
    five = dict(FOUR, knn=0.70)
    records = make_run(five, split="layer3", config=make_config(TRAIN__EPOCHS=30))
    records += make_run({p: v - 0.1 for p, v in five.items()}, split="layer3",
                        config=make_config(TRAIN__EPOCHS=30, DATA__LABEL_FRACTION=0.1))
    for split, shift in (["layer3"], 0.0), (["layer2", "layer3"], 0.02):
        config = dict(TRAIN__EPOCHS=10, MODEL__SPLIT=split)
        records += make_run(dict(linear=0.78, grad=0.83 + shift, gradfeat=0.85 + shift,
                                 finetune=0.89 + shift),
                            split=",".join(split), config=make_config(**config))
        records += make_run({"grad": 0.81 + shift, "gradfeat": 0.84 + shift},
                            split=",".join(split),
                            weights="pretrained; θ1=pretrained θ2=random ω=pretrained",
                            config=make_config(**config, ABLATION__THETA2="random"))
    records += make_run({"grad": 0.60, "gradfeat": 0.80}, split="layer3",
                        weights="pretrained; θ1=random θ2=random ω=random",
                        config=make_config(TRAIN__EPOCHS=10, MODEL__SPLIT=["layer3"],
                                           ABLATION__THETA1="random",
                                           ABLATION__THETA2="random",
                                           ABLATION__PROBE="random"))
    return records
