"""benchmarks/scale.py runs one policy on a tiny image set and reports every field."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


def _load():
    spec = importlib.util.spec_from_file_location("scale_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_disk_run_on_eight_images(tmp_path):
    scale = _load()
    args = scale.parse_args([
        "--n", "8", "--size", "32", "--classes", "2", "--policies", "disk",
        "--threads", "1", "--workers", "0", "--batch-size", "4",
    ])
    (row,) = scale.run_all(args, tmp_path, (8,))
    assert len(list((tmp_path / "n8_32px" / "train").rglob("*.jpg"))) == 8
    assert (row["n"], row["policy"], row["chosen"], row["steps"]) == (8, "disk", "disk", 2)
    # resnet18's layer3.0 output at 32 px: 256 channels × 2 × 2, float32, 8 + 2 images.
    assert row["cache_bytes"] == 256 * 2 * 2 * 4 * 10
    assert row["peak_rss_bytes"] >= row["peak_anon_bytes"] >= row["start_anon_bytes"] > 0
    # No worker here: the tree's proportional anonymous memory is the process's.
    assert 0 < row["peak_tree_pss_anon_bytes"] <= 1.05 * row["peak_anon_bytes"]
    assert row["theta1_s"] > 0 and row["epoch_s"] > 0
    assert 0 <= row["data_share"] < 1
    table = scale._table([row])
    assert "| 8 | disk |" in table


def test_a_forked_workers_shared_pages_count_once():
    import os
    import time

    scale = _load()
    block = bytearray(64 * 2**20)  # 64 MB of this process's anonymous memory
    block[:: 4096] = b"x" * len(block[:: 4096])
    alone = scale.tree_pss_anon_kb()
    pid = os.fork()
    if pid == 0:  # a worker that only reads what it shares with its parent
        time.sleep(2)
        os._exit(0)
    try:
        time.sleep(0.5)
        both = scale.tree_pss_anon_kb()
    finally:
        os.waitpid(pid, 0)
    # Summing RssAnon would count the 64 MB twice; Pss splits them.
    assert abs(both - alone) < 16 * 1024, (alone, both)
    assert both > 64 * 1024
