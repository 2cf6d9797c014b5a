"""benchmarks/lightly_benchmark.py with tiny settings: lightly's workflow end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from gradfeat_plugin import create_backbone

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_scores_above_chance_and_its_checkpoint_loads(tmp_path):
    out = tmp_path / "simclr.ckpt"
    # A process of its own, as CI runs the script (and its Trainers leave nothing
    # behind in the test process).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lightly_benchmark.py"),
         "--epochs", "1", "--eval-epochs", "2", "--subset", "256", "--input-size", "16",
         "--accelerator", "cpu", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {
        name: float(value) / 100
        for name, value in re.findall(r"^\| (.+?) \| ([\d.]+) \|$", proc.stdout, re.M)
    }
    assert set(results) == {"knn", "linear (lightly)", "gradfeat"}
    assert results["knn"] > 0.3 and results["gradfeat"] > 0.2  # chance: 0.1
    # The Lightning checkpoint (hyperparameters: an argparse Namespace) is what
    # benchmarks/eval.py --model torchvision:resnet18 --weights OUT loads.
    backbone = create_backbone("torchvision:resnet18", weights=str(out), input_size=16)
    state = torch.load(out, weights_only=False)["state_dict"]
    assert torch.equal(backbone.model.layer4[1].conv2.weight,
                       state["backbone.layer4.1.conv2.weight"])
    assert backbone.input_size == (3, 16, 16)
