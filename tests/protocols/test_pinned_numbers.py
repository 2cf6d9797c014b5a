"""The numbers of every protocol on the embedded digits, pinned.

A refactoring of the protocols (how they are built, how the config reaches them)
must not move a single prediction: these values were measured before one and must
hold after it, on one thread.
"""

from __future__ import annotations

import pytest

from gradfeat_plugin.protocols import run_protocols

from .conftest import make_cfg

#: Test-set accuracy (top-1, 397 digits) after 2 epochs, seed 0, one thread.
PINNED = {
    "linear": 0.574307,
    "grad": 0.556675,
    "gradfeat": 0.952141,
    "finetune": 0.926952,
    "knn": 0.959698,
}
#: Fine-tuning's two optimiser runs.
PINNED_FINETUNE = {"adam": 0.926952, "sgd": 0.337531}


@pytest.mark.slow
def test_every_protocol_gives_the_pinned_numbers(backbone, digits):
    cfg = make_cfg(epochs=2)
    cfg.FINETUNE.OPTIMIZERS = ["adam", "sgd"]
    cfg.TRAIN.LR_BY_PROTOCOL.GRADFEAT = 0.01
    cfg.FINETUNE.HEAD_INIT = "random"  # the start these numbers were pinned with
    results = run_protocols(list(PINNED), backbone, digits, cfg, progress=False)
    measured = {r.protocol: round(r.value, 6) for r in results}
    assert measured == PINNED
    finetune = next(r for r in results if r.protocol == "finetune")
    by_optimizer = finetune.extra["values_by_optimizer"]
    assert {k: round(v, 6) for k, v in by_optimizer.items()} == PINNED_FINETUNE
