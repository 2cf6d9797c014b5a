from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradfeat_plugin.results import ResultsStore
from gradfeat_plugin.results.cli import leaderboard_main

from .records import make_run, study

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "leaderboard.py"


def run_script(
    *args: str, cwd: Path, env_db: str | None = None
) -> subprocess.CompletedProcess:
    """Run benchmarks/leaderboard.py as a user would, with its own environment."""
    env = {k: v for k, v in os.environ.items() if k != "GRADFEAT_RESULTS"}
    if env_db:
        env["GRADFEAT_RESULTS"] = env_db
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def filled_db(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "filled.db")
    for seed, offset in enumerate((0.0, 0.02)):
        values = {"linear": 0.80, "gradfeat": 0.86, "finetune": 0.90}
        store.add_run(make_run({p: v + offset for p, v in values.items()}, seed=seed))
    return store.path


def assert_one_error_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]


def test_script_missing_database_exits_2_and_creates_nothing(tmp_path):
    result = run_script("--results", "nowhere.db", "--plot", "p.png", cwd=tmp_path)
    assert_one_error_line(result, "nowhere.db does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_script_empty_store_exits_2_and_writes_nothing(tmp_path):
    ResultsStore(tmp_path / "empty.db")
    result = run_script("--format", "csv", "--out", "board.csv", "--plot", "board.png",
                        cwd=tmp_path, env_db=str(tmp_path / "empty.db"))
    assert_one_error_line(result, "holds no results yet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_script_prints_the_default_database_leaderboard(filled_db, tmp_path):
    result = run_script("--plot", "board.png", cwd=tmp_path, env_db=str(filled_db))
    assert result.returncode == 0, result.stderr
    assert "| zoo:tiny |  |  | mnist5k | val_top1 | 2 | 81.00 ± 1.41 | 87.00 ± 1.41 " \
           "| 91.00 ± 1.41 | 60.00 |" in result.stdout
    assert (tmp_path / "board.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--format", "xlsx"], "invalid choice: 'xlsx'"),
        (["--colour"], "unrecognized arguments: --colour"),
        (["--out", "no/such/folder/board.md"], "does not exist"),
        (["--plot", "no/such/folder/board.png"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_error_line(
    filled_db, tmp_path, monkeypatch, capsys, args, fragment
):
    monkeypatch.chdir(tmp_path)
    assert leaderboard_main(["--results", str(filled_db), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filled.db"]


def test_corrupt_database_is_a_user_error(tmp_path, capsys):
    (tmp_path / "corrupt.db").write_bytes(b"\x00garbage" * 100)
    assert leaderboard_main(["--results", str(tmp_path / "corrupt.db")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("fmt", ["md", "csv", "html", "json"])
def test_out_file_in_every_format(filled_db, tmp_path, capsys, fmt):
    out = tmp_path / f"board.{fmt}"
    assert leaderboard_main(["--results", str(filled_db), "--format", fmt,
                             "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text(encoding="utf-8")
    if fmt == "json":
        records = json.loads(text)
        values = sorted(r["value"] for r in records if r["protocol"] == "gradfeat")
        assert values == pytest.approx([0.86, 0.88])
    elif fmt == "csv":
        row = text.splitlines()[1]
        assert row.startswith("zoo:tiny,,,mnist5k,val_top1,main,2,81.0000,1.4142,")
    else:
        assert "87.00 ± 1.41" in text and "60.00" in text


def test_update_replaces_only_the_marked_section(filled_db, tmp_path, capsys):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\nreading above\n<!-- leaderboard:begin -->\nold table\n"
                   "<!-- leaderboard:end -->\nreading below\n")
    assert leaderboard_main(["--results", str(filled_db), "--update", str(doc)]) == 0
    text = doc.read_text()
    assert "old table" not in text and "81.00 ± 1.41" in text
    assert text.startswith("# Results\nreading above\n") and text.endswith("reading below\n")
    assert capsys.readouterr().out == ""


def test_update_needs_the_markers(filled_db, tmp_path, capsys):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("no markers here\n")
    assert leaderboard_main(["--results", str(filled_db), "--update", str(doc)]) == 2
    assert "leaderboard:begin" in capsys.readouterr().err
    assert doc.read_text() == "no markers here\n"


@pytest.fixture()
def study_db(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "study.db")
    for record in study():
        store.add_run([record])
    return store.path


def test_compact_view_by_default_and_the_full_one_on_request(study_db, capsys):
    assert leaderboard_main(["--results", str(study_db)]) == 0
    compact = capsys.readouterr().out
    assert "| zoo:tiny (10 % labels) | layer3 |" in compact
    assert ("\n\nTable 1 ablation of zoo:tiny on mnist5k (10 epochs): val_top1 in %, "
            "one seed\n\n| θ1 | θ2 | ω | grad (layer3) |") in compact
    assert "θ2 random)" not in compact
    assert leaderboard_main(["--results", str(study_db), "--view", "full"]) == 0
    full = capsys.readouterr().out
    assert "| zoo:tiny (θ2 = layer2, layer3; θ2 random) | layer2, layer3 |" in full
    assert "Table 1 ablation" not in full
    assert leaderboard_main(["--results", str(study_db), "--view", "full",
                             "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 7


def test_show_val_puts_the_validation_metric_beside_the_test_one(tmp_path, capsys):
    store = ResultsStore(tmp_path / "val.db")
    for seed, (test, val) in enumerate(((0.80, 0.83), (0.82, 0.85))):
        store.add_run(make_run({"linear": test}, seed=seed, extra={
            "selected_on": "validation", "selection_metric": val}))
    assert leaderboard_main(["--results", str(store.path), "--show-val"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | θ2 | input | dataset | metric | seeds "
                               "| linear | linear val | gain recovered (%) |")
    assert lines[2].startswith("| zoo:tiny |  |  | mnist5k | val_top1 | 2 "
                               "| 81.00 ± 1.41 | 84.00 ± 1.41 |  |")
    assert leaderboard_main(["--results", str(store.path)]) == 0
    assert "linear val" not in capsys.readouterr().out


def test_out_replaces_a_compact_table_that_starts_with_table_1(tmp_path, capsys):
    store = ResultsStore(tmp_path / "ablation.db")
    for record in study():
        if record["weights"] != "pretrained":  # the ablation rows alone
            store.add_run([record])
    out = tmp_path / "board.md"
    for _ in range(2):
        assert leaderboard_main(["--results", str(store.path), "--out", str(out)]) == 0
    assert out.read_text().startswith("Table 1 ablation of zoo:tiny on mnist5k")
    assert capsys.readouterr() == ("", "")


def test_update_writes_the_compact_view(study_db, tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("above\n<!-- leaderboard:begin -->\nold\n<!-- leaderboard:end -->\n")
    assert leaderboard_main(["--results", str(study_db), "--update", str(doc)]) == 0
    text = doc.read_text()
    begin, end = text.index("leaderboard:begin"), text.index("leaderboard:end")
    section = text[begin:end]
    assert section.count("| model |") == 1 and section.count("| θ1 | θ2 | ω |") == 1
    assert "old" not in section and text.startswith("above\n")
