from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from matplotlib.image import imread

from gradfeat_plugin.results import (
    ResultsStore, Stat, leaderboard_table, plot_leaderboard, render,
)

from .records import make_run

COSTS = dict(wall_time_s=10.0, peak_memory_bytes=512 * 2**20, flops=2_500_000_000,
             params=11_700_000)


@pytest.fixture()
def records(tmp_path):
    """Two seeds of every protocol for zoo:tiny, one seed of two protocols for its
    random-weights baseline, and a model on which finetune does not beat linear."""
    store = ResultsStore(tmp_path / "r.db")
    # Written out of the paper's order: the table must reorder the columns.
    values = dict(knn=0.70, finetune=0.90, gradfeat=0.86, grad=0.75, linear=0.80)
    for seed, offset in enumerate((0.0, 0.02)):
        shifted = {p: v + offset for p, v in values.items()}
        store.add_run(make_run(shifted, seed=seed, **COSTS))
    store.add_run(make_run({"linear": 0.30, "gradfeat": 0.35}, weights="random"))
    store.add_run(make_run({"linear": 0.50, "gradfeat": 0.55, "finetune": 0.50},
                           model="zoo:flat", dataset="digits", seed=0))
    return store.records()


def test_table_means_stds_gain_and_costs(records):
    table = leaderboard_table(records)
    assert table.columns[:11] == [
        "model", "θ2", "input", "dataset", "metric", "seeds", "linear", "grad",
        "gradfeat", "finetune", "knn",
    ]
    assert table.column("model") == [
        "zoo:flat", "zoo:tiny", "zoo:tiny (weights random)"]
    assert table.column("dataset") == ["digits", "mnist5k", "mnist5k"]
    assert table.column("seeds") == [1, 2, 1]
    tiny = dict(zip(table.columns, table.rows[1]))
    assert tiny["linear"].mean == pytest.approx(81.0)
    assert tiny["linear"].std == pytest.approx(math.sqrt(2))
    assert tiny["linear"].n == 2
    # (87 - 81) / (91 - 81) = 60 %.
    assert tiny["gain recovered (%)"] == pytest.approx(60.0)
    assert tiny["wall time (s)"] == pytest.approx(50.0)  # 5 protocols x 10 s, one seed
    assert tiny["peak memory (MiB)"] == pytest.approx(512)
    assert tiny["GFLOPs"] == pytest.approx(2.5)
    assert tiny["params (M)"] == pytest.approx(11.7)
    # No finetune for the random baseline: no gain; finetune == linear for flat: the
    # gain is undefined, and the cell says so.
    assert table.column("gain recovered (%)") == ["undefined", pytest.approx(60.0), None]
    random_row = dict(zip(table.columns, table.rows[2]))
    assert random_row["gradfeat"] == Stat(mean=pytest.approx(35.0), std=None, n=1)
    assert random_row["knn"] is None and random_row["wall time (s)"] is None


def test_rerun_of_a_seed_replaces_it_and_splits_get_their_own_rows():
    base = make_run({"linear": 0.5, "gradfeat": 0.55}, split="layer4")
    rerun = make_run({"linear": 0.7, "gradfeat": 0.75}, split="layer4")
    other_split = make_run({"linear": 0.7, "gradfeat": 0.65}, split="layer3")
    for record, stamp in zip((*base, *rerun, *other_split), ("t1",) * 2 + ("t2",) * 2
                             + ("t1",) * 2):
        record["timestamp"] = stamp
    table = leaderboard_table([*rerun, *base, *other_split])
    assert table.column("model") == [
        "zoo:tiny (θ2 = layer3)", "zoo:tiny (θ2 = layer4)"]
    assert table.column("θ2") == ["layer3", "layer4"]
    assert [s.mean for s in table.column("gradfeat")] == pytest.approx([65.0, 75.0])
    # The linear probe reads the whole network's features: where θ2 starts does not
    # change it, so both runs of seed 0 are one number, the later one, shown once.
    assert [s and s.mean for s in table.column("linear")] == [pytest.approx(70.0), None]
    assert [r["value"] for r in table.records] == [0.7, 0.65, 0.75]


def test_markdown(records):
    text = render(leaderboard_table(records), "md")
    lines = text.splitlines()
    assert lines[0].startswith(
        "| model | θ2 | input | dataset | metric | seeds | linear | grad | gradfeat "
        "| finetune | knn | gain recovered (%) |")
    assert lines[1].startswith("| :--- | :--- | :--- | :--- | :--- | ---: |")
    assert lines[3] == (
        "| zoo:tiny |  |  | mnist5k | val_top1 | 2 | 81.00 ± 1.41 | 76.00 ± 1.41 "
        "| 87.00 ± 1.41 | 91.00 ± 1.41 | 71.00 ± 1.41 | 60.00 | 50.0 | 512 | 2.5 "
        "| 11.7 |")
    assert lines[4] == (
        "| zoo:tiny (weights random) |  |  | mnist5k | val_top1 | 1 | 30.00 |  | 35.00 "
        "|  |  |  |  |  |  |  |")
    assert lines[5] == ""
    assert lines[6].startswith("¹ gain recovered is defined only where fine-tuning beats")
    assert len(lines) == 7


def test_csv_splits_mean_and_std(records):
    rows = list(csv.DictReader(io.StringIO(render(leaderboard_table(records), "csv"))))
    assert [r["model"] for r in rows] == [
        "zoo:flat", "zoo:tiny", "zoo:tiny (weights random)"]
    tiny = rows[1]
    assert float(tiny["gradfeat"]) == pytest.approx(87.0)
    assert float(tiny["gradfeat std"]) == pytest.approx(1.4142, abs=1e-4)
    assert float(tiny["gain recovered (%)"]) == pytest.approx(60.0)
    assert rows[2]["gradfeat std"] == "" and rows[2]["finetune"] == ""
    assert rows[0]["gain recovered (%)"] == "undefined"
    assert rows[2]["gain recovered (%)"] == ""


def test_html_is_an_escaped_table(records):
    records = [
        {**r, "model": "entry<&>"} if r["model"] == "zoo:flat" else r for r in records]
    text = render(leaderboard_table(records), "html")
    assert text.startswith('<table class="gradfeat-leaderboard">')
    assert text.count("<tr>") == 4  # header + 3 rows
    assert "<th>gain recovered (%)</th>" in text
    assert "<td>87.00 ± 1.41</td>" in text and "<td>60.00</td>" in text
    assert "<td>entry&lt;&amp;&gt;</td>" in text


def test_json_is_a_list_of_records(records):
    data = json.loads(render(leaderboard_table(records), "json"))
    assert len(data) == len(records) == 15
    assert all({"model", "dataset", "protocol", "metric", "value", "seed"} <= set(d)
               for d in data)
    gradfeat = sorted(d["value"] for d in data
                      if d["label"] == "zoo:tiny" and d["protocol"] == "gradfeat")
    assert gradfeat == [0.86, 0.88]
    random = [d for d in data if d["weights"] == "random"]
    assert {d["model"] for d in random} == {"zoo:tiny"}
    assert {d["label"] for d in random} == {"zoo:tiny (weights random)"}


def test_unknown_format():
    with pytest.raises(ValueError, match="md, csv, html, json"):
        render(leaderboard_table([]), "xlsx")


def test_plot_is_a_real_bar_chart(records, tmp_path):
    path = tmp_path / "board.png"
    plot_leaderboard(records, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    image = imread(path)
    height, width = image.shape[:2]
    assert width > 900 and height > 300
    # The five protocol colours (matplotlib's C0..C4) are all drawn.
    pixels = image.reshape(-1, image.shape[-1])[::7, :3]
    colours = {tuple(np.round(px, 2)) for px in pixels}
    tab10 = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17),
             (0.84, 0.15, 0.16), (0.58, 0.4, 0.74)]
    assert all(any(np.allclose(c, t, atol=0.02) for c in colours) for t in tab10)
    with pytest.raises(ValueError, match="no results"):
        plot_leaderboard([], tmp_path / "empty.png")


def test_knn_accuracy_shares_the_row_of_top1():
    run = make_run({"linear": 0.8, "gradfeat": 0.9})
    run.append({**run[0], "protocol": "knn", "metric": "val_knn_top1", "value": 0.7})
    table = leaderboard_table(run)
    assert len(table.rows) == 1
    assert table.column("metric") == ["val_top1"]
    assert table.column("knn")[0].mean == pytest.approx(70.0)


def test_doubtful_and_diverged_numbers_are_flagged_in_every_format():
    extra = {"num_classes": 10}
    records = make_run({"linear": 0.4970, "grad": 0.383, "gradfeat": 0.4487,
                        "finetune": 0.0944}, extra=extra)
    records += make_run({"knn": 0.0}, extra=extra, status="diverged", seed=0)
    records[-1].update(value=None, reason="training loss is nan at step 3")
    table = leaderboard_table(records)
    row = dict(zip(table.columns, table.rows[0]))
    assert row["knn"] == "diverged" and row["finetune"].mean == pytest.approx(9.44)
    # Fine-tuning below the probe: the gain is undefined, not a positive ratio of two
    # negative differences.
    assert row["gain recovered (%)"] == "undefined"
    md = render(table, "md")
    cells = md.splitlines()[2].split(" | ")
    assert "9.44²³" in cells and "diverged¹" in cells
    assert "¹ knn diverged: training loss is nan at step 3" in md
    assert "² at or below chance (10.00 %: one of 10 classes)" in md
    assert "³ fine-tuning below the linear probe" in md
    assert "undefined⁴" in cells
    assert "⁴ gain recovered is defined only where fine-tuning beats the linear probe " \
        "(here 9.44 % against 49.70 %)" in md
    parsed = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert parsed[0]["finetune"] == "9.4400" and parsed[0]["knn"] == "diverged"
    assert "² at or below chance" in parsed[0]["notes"]
    assert "¹ knn diverged" in parsed[0]["notes"]
    html_text = render(table, "html")
    assert "<td>9.44²³</td>" in html_text and "¹ knn diverged" in html_text
    by_protocol = {r["protocol"]: r for r in json.loads(render(table, "json"))}
    assert by_protocol["knn"]["status"] == "diverged" and by_protocol["knn"]["value"] is None
    assert len(by_protocol["finetune"]["notes"]) == 3
    # The gain's footnote is every record's of the row; nothing else flags linear.
    assert by_protocol["linear"]["notes"] == [by_protocol["finetune"]["notes"][-1]]
    assert by_protocol["linear"]["notes"][0].startswith("gain recovered is defined only")
    gain = make_run({"linear": 0.5, "gradfeat": 0.45, "finetune": 0.6})
    text = render(leaderboard_table(gain), "md")
    assert "-50.00¹" in text and "¹ negative gain recovered: gradfeat and" in text
