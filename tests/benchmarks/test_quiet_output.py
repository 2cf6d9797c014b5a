"""What benchmarks/eval.py prints into a log: no banners, bars or warnings of its
libraries, and one summary table at the end (stdout holds nothing else)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from gradfeat_plugin.cli import show_progress
from gradfeat_plugin.results import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
#: Drawn by tqdm (Lightning's bars and the θ1 passes) and by Lightning's result tables.
BAR_MARKS = ("\r", "it/s]", "█", "─")
#: Superscript footnote markers of the leaderboard.
NOTE_MARKS = "¹²³⁴⁵⁶⁷⁸⁹⁰"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One tiny run of three protocols as a batch job: stdout and stderr are pipes
    and no --no-progress is given. The store already holds another model's row."""
    db = tmp_path_factory.mktemp("quiet") / "r.db"
    ResultsStore(db).add_run([dict(model="zoo:other", weights="pretrained",
                                   dataset="digits", protocol="linear",
                                   metric="val_top1", value=0.5)])
    argv = ["--protocol", "linear", "gradfeat", "knn", "--model", "bigan_encoder",
            "--weights", "random", "--dataset", "digits", "--epochs", "1",
            "--batch-size", "128", "--results", str(db), "KNN.K", "10",
            "DATA.LABEL_FRACTION", "0.3"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval.py"), *argv],
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc, db


def test_no_banner_or_library_warning(run):
    proc, _ = run
    both = proc.stdout + proc.stderr
    for banner in ("GPU available:", "TPU available:", "`Trainer.fit` stopped"):
        assert both.count(banner) <= 1, both
    assert "val_dataloader" not in both
    assert "torch.jit.script" not in both
    assert "Warning" not in both, both


def test_no_progress_bars_without_a_terminal(run):
    proc, _ = run
    for mark in BAR_MARKS:
        assert mark not in proc.stdout and mark not in proc.stderr, repr(mark)


def test_one_summary_table_of_this_runs_setting(run):
    proc, db = run
    header, blank, *table = proc.stdout.rstrip("\n").splitlines()
    assert header.startswith("run ") and f"written to {db}" in header and blank == ""
    assert [line for line in table if line.startswith("| model |")] == [table[0]]
    rows = [line for line in table if line.startswith("|")]
    assert table[: len(rows)] == rows  # the table, then only its footnotes
    assert all(line == "" or line[0] in NOTE_MARKS for line in table[len(rows):])
    (row,) = rows[2:]
    assert row.startswith(
        "| bigan_encoder (weights random) | conv4 | 3×32×32 | digits | val_top1 | 1 |"
    )
    assert "zoo:other" not in proc.stdout  # another setting's row is the leaderboard's


@pytest.mark.parametrize("terminal,no_progress,shown", [
    (True, False, True), (True, True, False), (False, False, False),
])
def test_progress_bars_only_on_a_terminal(monkeypatch, terminal, no_progress, shown):
    stderr = io.StringIO()
    monkeypatch.setattr(stderr, "isatty", lambda: terminal)
    monkeypatch.setattr(sys, "stderr", stderr)
    assert show_progress(no_progress) is shown
