"""The leaderboard's rows as settings: labels in words, rows merged where the
settings that can change each number agree, θ2 and input columns and the whole
setting in every format, the validation metric, and the compact view with the
Table 1 ablation in the paper's layout."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gradfeat_plugin.results import leaderboard, leaderboard_table, render
from gradfeat_plugin.results.leaderboard import render_leaderboard

from .records import FOUR, make_config, make_run, study


def md_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_a_fine_tuning_key_adds_a_fine_tuning_row_alone():
    """A run that changes only fine-tuning's learning rate: its linear, grad and
    gradfeat numbers are seeds of the default setting, its fine-tuning number is a
    row of its own."""
    default, slow = make_config(), make_config(TRAIN__LR_BY_PROTOCOL__FINETUNE=0.001)
    records = make_run(FOUR, seed=0, config=default)
    records += make_run({p: v + 0.02 for p, v in FOUR.items()}, seed=1, config=default)
    records += make_run({**FOUR, "finetune": 0.88}, seed=2, config=slow)
    # Fine-tuning alone, with SGD only.
    records += make_run({"finetune": 0.89}, config=make_config(
        FINETUNE__OPTIMIZERS=["sgd"]), wall_time_s=5.0)
    table = leaderboard_table(records)
    assert md_rows(render(table, "md"))[2:] == [
        "| zoo:tiny | default | default | mnist5k | val_top1 | 3 | 80.67 ± 1.15 "
        "| 84.67 ± 1.15 | 86.67 ± 1.15 | 91.00 ± 1.41 | 58.06 |  |  |  |  |",
        # Their gain recovered counts the linear probe and gradfeat they share;
        # their costs are those of their own runs.
        "| zoo:tiny (fine-tuning lr 0.001) | default | default | mnist5k | val_top1 "
        "| 1 |  |  |  | 88.00 | 81.82 |  |  |  |  |",
        "| zoo:tiny (fine-tuning with sgd) | default | default | mnist5k | val_top1 "
        "| 1 |  |  |  | 89.00 | 72.00 | 5.0 |  |  |  |",
    ]
    data = json.loads(render(table, "json"))
    assert len(data) == 13
    by_label = {}
    for d in data:
        by_label.setdefault(d["label"], []).append((d["protocol"], d["seed"]))
    assert sorted(by_label["zoo:tiny (fine-tuning lr 0.001)"]) == [("finetune", 2)]
    assert ("linear", 2) in by_label["zoo:tiny"]
    slow_finetune = next(d for d in data if d["label"].endswith("0.001)"))
    assert slow_finetune["evaluation_setting"]["TRAIN.LR_BY_PROTOCOL.FINETUNE"] == 0.001
    linear = next(d for d in data if d["protocol"] == "linear")
    assert "TRAIN.LR_BY_PROTOCOL.FINETUNE" not in linear["evaluation_setting"]
    assert "FINETUNE.OPTIMIZERS" not in linear["evaluation_setting"]


def test_theta2_variants_share_the_linear_probe():
    """A config that names the default θ2 is the default setting; another θ2 is a
    row whose linear probe (which θ2 does not change) is shown once, and still
    enters its gain recovered."""
    records = make_run(FOUR, split="layer3", config=make_config())
    records += make_run({**FOUR, "grad": 0.85, "gradfeat": 0.87}, seed=1,
                        split="layer3", config=make_config(MODEL__SPLIT=["layer3"]))
    records += make_run(dict(linear=0.80, grad=0.88, gradfeat=0.89, finetune=0.92),
                        split="layer2,layer3",
                        config=make_config(MODEL__SPLIT=["layer2", "layer3"]))
    table = leaderboard_table(records)
    assert md_rows(render(table, "md"))[2:] == [
        "| zoo:tiny | layer3 | default | mnist5k | val_top1 | 2 | 80.00 ± 0.00 "
        "| 84.50 ± 0.71 | 86.50 ± 0.71 | 90.00 ± 0.00 | 65.00 |  |  |  |  |",
        "| zoo:tiny (θ2 = layer2, layer3) | layer2, layer3 | default | mnist5k "
        "| val_top1 | 1 |  | 88.00 | 89.00 | 92.00 | 75.00 |  |  |  |  |",
    ]


def test_labels_say_what_differs_in_words():
    extra = {"input_size": [3, 32, 32]}
    records = make_run(FOUR, config=make_config(), extra=extra)
    records += make_run(FOUR, weights="random", config=make_config(), extra=extra)
    records += make_run(FOUR, weights="random", extra=extra,
                        config=make_config(DATA__LABEL_FRACTION=0.1))
    records += make_run(FOUR, config=make_config(TRAIN__LR=0.01), extra=extra)
    records += make_run(FOUR, config=make_config(MODEL__INPUT_SIZE=64),
                        extra={"input_size": [3, 64, 64]})
    records += make_run({"grad": 0.5, "gradfeat": 0.8}, extra=extra,
                        weights="pretrained; θ1=random θ2=random ω=pretrained",
                        config=make_config(ABLATION__THETA1="random",
                                           ABLATION__THETA2="random"))
    records += make_run(FOUR, config=make_config(PRETRAIN__LR=0.1), extra=extra)
    table = leaderboard_table(records)
    # Main settings first, then the ablation, then the rest.
    assert table.column("model") == [
        "zoo:tiny",
        "zoo:tiny (weights random)",
        "zoo:tiny (weights random; 10 % labels)",
        "zoo:tiny (θ1, θ2 random)",
        "zoo:tiny (lr 0.01)",
        "zoo:tiny (PRETRAIN.LR = 0.1)",
        "zoo:tiny (input 3×64×64)",
    ]
    assert table.column("input") == [*["3×32×32"] * 6, "3×64×64"]
    assert table.kinds == [*["main"] * 3, "ablation", *["other"] * 3]
    # Which network it is is said even where nothing else is there to differ.
    alone = leaderboard_table(make_run(FOUR, weights="/ckpt/last.pth (partial)",
                                       config=make_config()))
    assert alone.column("model") == ["zoo:tiny (weights last.pth (partial))"]
    ablated = leaderboard_table(make_run({"grad": 0.5}, config=make_config(
        ABLATION__PROBE="random")))
    assert ablated.column("model") == ["zoo:tiny (ω random)"]


def test_theta2_input_and_setting_in_every_format():
    records = make_run(FOUR, split="layer3", extra={"input_size": [3, 64, 64]},
                       config=make_config())
    records += make_run(FOUR, split="layer3", extra={"input_size": [3, 64, 64]},
                        config=make_config(DATA__LABEL_FRACTION=0.1))
    table = leaderboard_table(records)
    assert md_rows(render(table, "md"))[3].startswith(
        "| zoo:tiny (10 % labels) | layer3 | 3×64×64 | mnist5k | val_top1 | 1 "
        "| 80.00 |")
    html_text = render(table, "html")
    assert "<th>θ2</th><th>input</th>" in html_text
    assert ("<td>zoo:tiny (10 % labels)</td><td>layer3</td><td>3×64×64</td>"
            in html_text)
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert [(r["model"], r["θ2"], r["input"], r["kind"]) for r in rows] == [
        ("zoo:tiny", "layer3", "3×64×64", "main"),
        ("zoo:tiny (10 % labels)", "layer3", "3×64×64", "main"),
    ]
    # Keys that differ between rows get a column each; the whole setting follows.
    assert [r["DATA.LABEL_FRACTION"] for r in rows] == ["1.0", "0.1"]
    assert "TRAIN.LR" not in rows[0]
    setting = json.loads(rows[1]["setting"])
    assert setting["DATA.LABEL_FRACTION"] == 0.1 and setting["TRAIN.LR"] == 0.001
    assert setting["MODEL.SPLIT"] == ["layer3"]
    assert setting["MODEL.INPUT_SIZE"] == [3, 64, 64]
    data = json.loads(render(table, "json"))
    assert {(d["theta2"] == ["layer3"], d["input_size"] == [3, 64, 64], d["kind"])
            for d in data} == {(True, True, "main")}
    assert {d["evaluation_setting"]["DATA.LABEL_FRACTION"] for d in data} == {1.0, 0.1}


def test_validation_metric_beside_the_test_one():
    def chosen(value: float) -> dict:
        return {"selected_on": "validation", "selection_metric": value}

    records = [
        *make_run({"linear": 0.80}, seed=0, extra=chosen(0.83)),
        *make_run({"linear": 0.82}, seed=1, extra=chosen(0.85)),
        *make_run({"finetune": 0.90}, seed=0, extra=chosen(0.93)),
        *make_run({"finetune": 0.92}, seed=1, extra=chosen(0.97)),
        # Chosen on the test split: no validation number, and a footnote.
        *make_run({"gradfeat": 0.86}, seed=0,
                  extra={"selected_on": "test", "selection_metric": 0.86}),
    ]
    table = leaderboard_table(records)
    plain = md_rows(render(table, "md"))
    assert "linear val" not in plain[0]
    shown = md_rows(render(table, "md", show_val=True))
    assert shown[0].startswith(
        "| model | θ2 | input | dataset | metric | seeds | linear | linear val "
        "| gradfeat | finetune | finetune val | gain recovered (%) |")
    assert shown[2].startswith(
        "| zoo:tiny |  |  | mnist5k | val_top1 | 2 | 81.00 ± 1.41 | 84.00 ± 1.41 "
        "| 86.00¹ | 91.00 ± 1.41 | 95.00 ± 2.83 | 50.00 |")
    row = next(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert (row["linear val"], row["linear val std"]) == ("84.0000", "1.4142")
    assert (row["gradfeat"], row["gradfeat val"]) == ("86.0000", "")
    assert "¹ chosen on the test split" in row["notes"]


def test_compact_view_has_the_main_rows_then_table_1():
    text = render_leaderboard(leaderboard(study()), "md")
    blocks = text.split("\n\n")
    assert md_rows(blocks[0]) == [
        "| model | θ2 | input | dataset | metric | seeds | linear | grad | gradfeat "
        "| finetune | knn | gain recovered (%) | wall time (s) | peak memory (MiB) "
        "| GFLOPs | params (M) |",
        "| :--- | :--- | :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: |",
        "| zoo:tiny | layer3 | default | mnist5k | val_top1 | 1 | 80.00 | 84.00 "
        "| 86.00 | 90.00 | 70.00 | 60.00 |  |  |  |  |",
        "| zoo:tiny (10 % labels) | layer3 | default | mnist5k | val_top1 | 1 | 70.00 "
        "| 74.00 | 76.00 | 80.00 | 60.00 | 60.00 |  |  |  |  |",
    ]
    assert blocks[1] == ("Table 1 ablation of zoo:tiny on mnist5k (10 epochs): "
                         "val_top1 in %, one seed")
    assert md_rows(blocks[2]) == [
        "| θ1 | θ2 | ω | grad (layer3) | gradfeat (layer3) | grad (layer2, layer3) "
        "| gradfeat (layer2, layer3) |",
        "| :--- | :--- | :--- | ---: | ---: | ---: | ---: |",
        "| random | random | random | 60.00 | 80.00 |  |  |",
        "| pretrained | random | pretrained | 81.00 | 84.00 | 83.00 | 86.00 |",
        "| pretrained | pretrained | pretrained | 83.00 | 85.00 | 85.00 | 87.00 |",
        "| activation (linear probe) |  |  | 78.00 |  | 78.00 |  |",
        "| fine-tuning |  |  | 89.00 |  | 91.00 |  |",
    ]
    assert len(blocks) == 3


def test_full_view_has_every_setting_in_one_table():
    board = leaderboard(study())
    full = md_rows(render_leaderboard(board, "md", view="full"))
    assert [row.split(" | ")[0] for row in full[2:]] == [
        "| zoo:tiny (30 epochs)",
        "| zoo:tiny (10 % labels; 30 epochs)",
        "| zoo:tiny",
        "| zoo:tiny (θ2 random)",
        "| zoo:tiny (θ1, θ2, ω random)",
        "| zoo:tiny (θ2 = layer2, layer3)",
        "| zoo:tiny (θ2 = layer2, layer3; θ2 random)",
    ]
    assert board.full.kinds == ["main", "main", *["ablation"] * 5]
    # csv and json hold every row whatever the view.
    for view in ("compact", "full"):
        rows = list(csv.DictReader(io.StringIO(render_leaderboard(board, "csv", view))))
        assert len(rows) == 7
        # Both 10-epoch runs of seed 0 measured the one linear probe: the later counts.
        assert len(json.loads(render_leaderboard(board, "json", view))) == 23


def test_ablation_cells_keep_their_footnotes_and_seed_counts():
    records = study()
    # A second seed of the pretrained rows only, and a diverged all-random grad.
    records += make_run(dict(grad=0.85, gradfeat=0.87), seed=1, split="layer3",
                        config=make_config(TRAIN__EPOCHS=10, MODEL__SPLIT=["layer3"]))
    diverged = next(r for r in records if r["protocol"] == "grad"
                    and r["weights"].startswith("pretrained; θ1=random"))
    diverged.update(status="diverged", value=None, reason="loss is nan")
    tables = leaderboard(records).ablations
    assert len(tables) == 1
    text = render(tables[0], "md")
    assert text.startswith("Table 1 ablation of zoo:tiny on mnist5k (10 epochs): "
                           "val_top1 in %, one seed unless marked (n=…)\n")
    rows = md_rows(text)
    assert rows[2] == "| random | random | random | diverged¹ | 80.00 |  |  |"
    assert rows[4] == ("| pretrained | pretrained | pretrained | 84.00 ± 1.41 (n=2) "
                       "| 86.00 ± 1.41 (n=2) | 85.00 | 87.00 |")
    assert "¹ grad diverged: loss is nan" in text


def test_runs_from_before_the_validation_split_chose_on_the_test_split():
    """Such runs stored no ``selected_on``: fine-tuning's choice between Adam and
    SGD was made on the test split; a protocol with one optimiser chose nothing."""
    both = {"values_by_optimizer": {"adam": 0.90, "sgd": 0.85}}
    one = {"values_by_optimizer": {"adam": 0.86}}
    records = make_run({"linear": 0.80, "gradfeat": 0.86}, extra=one)
    records += make_run({"finetune": 0.90}, extra=both)
    text = render(leaderboard_table(records), "md")
    assert md_rows(text)[2].startswith(
        "| zoo:tiny |  |  | mnist5k | val_top1 | 1 | 80.00 | 86.00 | 90.00¹ | 60.00 |")
    assert text.endswith("¹ chosen on the test split (no validation split: "
                         "DATA.VAL_FRACTION 0, or a run from before it existed), so "
                         "optimistic  \n")


def test_compact_view_ends_with_the_other_settings():
    records = make_run(FOUR, config=make_config())
    records += make_run(FOUR, config=make_config(TRAIN__LR=0.01))
    records += make_run({"grad": 0.5, "gradfeat": 0.8},
                        config=make_config(ABLATION__THETA2="random"))
    board = leaderboard(records)
    blocks = render_leaderboard(board, "md").split("\n\n")
    first_cells = [md_rows(b)[2].split(" | ")[0] if md_rows(b) else None
                   for b in blocks]
    assert first_cells == [
        "| zoo:tiny", None, "| pretrained", None, "| zoo:tiny (lr 0.01)"]
    assert blocks[1].startswith("Table 1 ablation of zoo:tiny on mnist5k: ")
    assert blocks[3] == "Other settings: in %, mean ± std over seeds"
    html_text = render_leaderboard(board, "html")
    assert html_text.count('<table class="gradfeat-leaderboard">') == 3
    assert "<caption>Other settings: in %, mean ± std over seeds</caption>" in html_text
    assert "<th>gradfeat (default)</th>" in html_text


def test_both_initialisations_of_table_1_show_the_pretrained_row():
    """The pretrained row draws nothing at random: ABLATION.INIT cannot change it,
    so the table of each initialisation shows it, at every θ2 depth."""
    records = study()
    for split, shift in (["layer3"], 0.0), (["layer2", "layer3"], 0.02):
        records += make_run({"grad": 0.82 + shift, "gradfeat": 0.83 + shift},
                            split=",".join(split),
                            weights="pretrained; θ1=pretrained θ2=random ω=pretrained",
                            config=make_config(TRAIN__EPOCHS=10, MODEL__SPLIT=split,
                                               ABLATION__THETA2="random",
                                               ABLATION__INIT="ntk"))
    tables = leaderboard(records).ablations
    texts = [render(t, "md") for t in tables]
    assert len(texts) == 2 and "ABLATION.INIT = ntk" in texts[1]
    assert "ABLATION.INIT" not in texts[0]
    pretrained = "| pretrained | pretrained | pretrained | 83.00 | 85.00 | 85.00 | 87.00 |"
    assert [pretrained in md_rows(text) for text in texts] == [True, True]
    assert "| pretrained | random | pretrained | 82.00 | 83.00 | 84.00 | 85.00 |" in (
        md_rows(texts[1]))
    # Every run still counts once in the full table.
    assert len(md_rows(render_leaderboard(leaderboard(records), "md", view="full"))) == 11
