"""Run protocols on the digits with N CPU processes; each rank writes what it returned
and how many rows it stored.

    python tests/protocols/ddp_script.py WEIGHTS OUT_DIR DEVICES STRATEGY

Lightning's ``ddp`` strategy re-runs this script once per extra process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.protocols import FrozenOutputs, run_protocols
from tests.protocols.conftest import IMG_SIZE, TinyBackbone, make_cfg, make_splits

PROTOCOLS = ["gradfeat", "knn"]


def record_stored(stored: dict[str, list[int]]) -> None:
    """Note the rows of every stored tensor set (θ1's outputs, pooled features)
    when the run drops them."""
    close = FrozenOutputs.close

    def closing(self: FrozenOutputs) -> None:
        for (kind, _), inputs in self._store.items():
            stored.setdefault(kind, []).append(len(inputs))
        close(self)

    FrozenOutputs.close = closing  # type: ignore[method-assign]


def main(weights: str, out_dir: str, devices: int, strategy: str) -> None:
    torch.set_num_threads(1)
    stored: dict[str, list[int]] = {}
    record_stored(stored)
    model = BiGANEncoder(width=8, img_size=IMG_SIZE)
    model.load_state_dict(torch.load(weights, weights_only=True))
    backbone = TinyBackbone(model.eval(), ["conv4"], model.num_features)
    cfg = make_cfg(epochs=2)
    cfg.TRAINER.DEVICES = devices
    cfg.TRAINER.STRATEGY = strategy
    results = run_protocols(PROTOCOLS, backbone, make_splits(), cfg, progress=False)
    rank = os.environ.get("LOCAL_RANK", "0")
    records = [dataclasses.asdict(r) for r in results]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(records))
    Path(out_dir, f"stored{rank}.json").write_text(json.dumps(stored))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
