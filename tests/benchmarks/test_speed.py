"""benchmarks/speed.py runs end to end and reports what the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_speed_report(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--image-size", "32",
         "--batch-size", "4", "--rounds", "1", "--warmup", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    methods = {row["method"]: row for row in report["steps"]}
    assert set(methods) == {"finetune θ2", "linear probe", "gradfeat (func)", "gradfeat (dual)"}
    assert methods["finetune θ2"]["time_ratio_vs_finetune"] == 1.0
    assert all(row["memory_mb"] > 0 for row in report["steps"])
    # ResNet-18 layer4 holds 8,393,728 parameters: 10 classes x 4 bytes each per image.
    assert report["naive"]["extrapolated_bytes_per_image"]["bytes"] == 8_393_728 * 10 * 4
    assert report["naive"]["naive_bytes_per_image"] == report["naive"]["theta2_params"] * 10 * 4
    assert "336 MB per image" in proc.stdout
    # At 32 px layer4 runs on 2x2 -> 1x1 maps: its first conv and the downsample
    # (input without tangent) are the boundary, three 512x512 3x3 convs the inside.
    bound = report["flop_bound"]
    assert bound["theta2_boundary_flops"] == 512 * 256 * 9 + 512 * 256
    assert bound["theta2_flops"] == bound["theta2_boundary_flops"] + 3 * 512 * 512 * 9
    prefix, inner = bound["prefix_flops"], 3 * 512 * 512 * 9
    edge = bound["theta2_boundary_flops"]
    assert bound["bound"] == (prefix + 5 * inner + 3 * edge) / (prefix + 3 * inner + 2 * edge)
    assert "conv-FLOP bound" in proc.stdout
