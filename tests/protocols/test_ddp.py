"""Two CPU processes (DDP, gloo) score like one, and only rank 0 returns results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from . import ddp_script
from .conftest import NUM_TRAIN

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, weights: Path, devices: int, strategy: str) -> Path:
    out = tmp_path / f"out{devices}"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    subprocess.run(
        [sys.executable, ddp_script.__file__, str(weights), str(out), str(devices)]
        + [strategy],
        cwd=REPO,
        env=env,
        check=True,
        timeout=240,
        capture_output=True,
    )
    return out


def _values(path: Path) -> dict[str, float]:
    return {r["protocol"]: r["value"] for r in json.loads(path.read_text())}


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, backbone):
    weights = tmp_path / "backbone.pt"
    torch.save(backbone.model.state_dict(), weights)
    single = _run(tmp_path, weights, 1, "auto")
    double = _run(tmp_path, weights, 2, "ddp")

    assert sorted(p.name for p in single.glob("rank*")) == ["rank0.json"]
    assert sorted(p.name for p in double.glob("rank*")) == ["rank0.json", "rank1.json"]
    assert json.loads((double / "rank1.json").read_text()) == []
    one = _values(single / "rank0.json")
    two = _values(double / "rank0.json")
    assert list(one) == list(two) == ddp_script.PROTOCOLS
    for protocol in one:
        assert one[protocol] > 0.6
        assert two[protocol] == pytest.approx(one[protocol], abs=0.03), protocol

    # Each process stores θ1's outputs of its own half of the train and test sets
    # (DistributedSampler's shards: the first items repeated to even them out);
    # pooled features, small, are kept whole for the statistics.
    train, test = NUM_TRAIN, 1797 - NUM_TRAIN
    alone = json.loads((single / "stored0.json").read_text())
    assert alone == {"boundary": [train, test], "features": [train, test]}
    for rank in (0, 1):
        stored = json.loads((double / f"stored{rank}.json").read_text())
        assert stored["boundary"] == [train // 2, -(-test // 2)], rank
        assert stored["features"] == [train, test], rank
