"""benchmarks/protocol_cost.py runs end to end: times and FLOPs of all and finetune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cost_report_with_flops():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "protocol_cost.py"), "--width", "8",
         "--epochs", "1", "--repeats", "1", "--flops", "--clock", "cpu",
         "--finetune-optimizers", "adam"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    times = report["median_s"]
    assert report["ratio_all_vs_finetune"] == pytest.approx(
        times["all"] / times["finetune"], abs=2e-3
    )
    assert set(report["scores"]) == {"linear", "grad", "gradfeat", "finetune"}
    # all holds the same fine-tuning and trains three linear models besides it.
    gflops = report["gflops"]
    assert 0 < gflops["finetune"] < gflops["all"]
    assert report["flop_ratio_all_vs_finetune"] > 1.2
    assert report["flop_ratio_all_vs_finetune"] == pytest.approx(
        gflops["all"] / gflops["finetune"], rel=0.05
    )
