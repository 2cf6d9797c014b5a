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

    assert sorted(p.name for p in single.iterdir()) == ["rank0.json"]
    assert sorted(p.name for p in double.iterdir()) == ["rank0.json", "rank1.json"]
    assert json.loads((double / "rank1.json").read_text()) == []
    one = _values(single / "rank0.json")
    two = _values(double / "rank0.json")
    assert list(one) == list(two) == ddp_script.PROTOCOLS
    for protocol in one:
        assert one[protocol] > 0.6
        assert two[protocol] == pytest.approx(one[protocol], abs=0.03), protocol
