"""``benchmarks/pretrain.py``: a thin CLI; user errors are one line and status 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradfeat_plugin.errors import GradfeatError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("pretrain_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_script_saves_checkpoint_and_metadata(tmp_path, capsys):
    out = tmp_path / "sup.pth"
    argv = ["--method", "supervised", "--dataset", "digits", "--arch", "resnet_small",
            "--epochs", "2", "--out", str(out), "--seed", "3", "--no-progress",
            "PRETRAIN.MAX_SAMPLES", "32", "TRAINER.ACCELERATOR", "cpu"]  # fmt: skip
    assert _load_script().main(argv) == 0
    meta = json.loads((tmp_path / "sup.json").read_text())
    assert (meta["recipe"], meta["epochs"], meta["seed"], meta["train_samples"]) == (
        "supervised", 2, 3, 32,
    )  # fmt: skip
    assert len(torch.load(out, weights_only=True)) > 0
    assert f"saved {out}" in capsys.readouterr().out


def test_user_errors_print_one_line_and_exit_2(tmp_path):
    out = tmp_path / "x.pth"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--method",
            "rotation",
            "--dataset",
            "cifar10",
            "--arch",
            "resnet_small",
            "--epochs",
            "1",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cifar10 needs a data folder")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_flags_are_user_errors():
    argv = ["--method", "jigsaw", "--dataset", "digits", "--arch", "resnet_small",
            "--epochs", "1", "--out", "x.pth"]  # fmt: skip
    with pytest.raises(GradfeatError, match="invalid choice: 'jigsaw'"):
        _load_script().main(argv)
