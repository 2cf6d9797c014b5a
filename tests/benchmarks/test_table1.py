"""benchmarks/table1.py: the store's ablation rows in the paper's Table 1 layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gradfeat_plugin.errors import GradfeatError

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "table1.py"
spec = importlib.util.spec_from_file_location("table1_script", SCRIPT)
table1_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table1_script)


def record(protocol, value, split="conv5", seed=0, ablation=("pretrained",) * 3, **kw):
    t1, t2, w = ablation
    config = (
        f"ABLATION:\n  THETA1: {t1}\n  THETA2: {t2}\n  PROBE: {w}\n"
        f"DATA:\n  LABEL_FRACTION: {kw.pop('fraction', 1.0)}\n"
    )
    return dict(
        model="zoo:m", weights="pretrained", split=split, protocol=protocol, value=value,
        seed=seed, epochs=kw.pop("epochs", 10), status="ok", config=config,
        timestamp=kw.pop("timestamp", "2026-01-01T00:00:00"), **kw,
    )


def test_rows_settings_and_splits_in_the_papers_layout():
    rnd = ("pretrained", "random", "pretrained")
    records = [
        record("grad", 0.50, seed=0), record("grad", 0.60, seed=1),
        record("gradfeat", 0.70, seed=0), record("gradfeat", 0.70, seed=1),
        record("grad", 0.20, seed=0, ablation=rnd), record("grad", 0.30, seed=1, ablation=rnd),
        record("linear", 0.65, seed=0), record("finetune", 0.80, split="conv4,conv5"),
        # Not counted: another epoch count, a label fraction, an older run of a seed.
        record("grad", 0.99, epochs=30), record("grad", 0.99, fraction=0.1),
        record("grad", 0.01, seed=0, timestamp="2025-01-01T00:00:00"),
    ]
    lines = table1_script.table1(records, "zoo:m", epochs=10).splitlines()
    assert lines[0].split("|")[4:8] == [
        " grad (conv5) ", " full (conv5) ", " grad (conv4 conv5) ", " full (conv4 conv5) "
    ]
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in lines[2:]}
    assert "| 55.00 ± 7.07 | 70.00 ± 0.00 |" in rows[("pretrained",) * 3]
    assert "| 25.00 ± 7.07 |  |" in rows[rnd]
    assert "65.00 (n=1)" in rows[("activation (linear probe)", "", "")]
    assert "80.00 (n=1)" in rows[("fine-tuning", "", "")]


def test_no_rows_is_an_error():
    with pytest.raises(GradfeatError, match="no ablation rows"):
        table1_script.table1([record("grad", 0.5)], "zoo:other", epochs=None)
