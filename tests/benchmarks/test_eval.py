"""benchmarks/eval.py end to end on embedded data, and every user-error path."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gradfeat_plugin.cli import main_guard

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("eval_script", ROOT / "benchmarks" / "eval.py")
eval_script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(eval_script)

FAST = ["--model", "bigan_encoder", "--weights", "random", "--dataset", "digits",
        "--epochs", "1", "--batch-size", "128", "--no-progress"]


def run_eval(argv):
    return main_guard(lambda: eval_script.main(argv))


def rows(db):
    if not Path(db).exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT protocol, metric, value FROM results").fetchall()


def test_all_protocols_share_one_run(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert run_eval(["--protocol", "all", *FAST, "--results", str(db),
                     "KNN.K", "10"]) == 0
    got = {p: (m, v) for p, m, v in rows(db)}
    assert list(got) == ["linear", "grad", "gradfeat", "finetune", "knn"]
    assert got["knn"][0] == "val_knn_top1" and got["knn"][1] > 0.5
    assert all(0.0 <= v <= 1.0 for _, v in got.values())
    out = capsys.readouterr().out
    assert "| bigan_encoder (weights random) | conv4 | 3×32×32 | digits |" in out
    saved = list((tmp_path / "runs").glob("*.yaml"))
    assert len(saved) == 1 and "K: 10" in saved[0].read_text()


@pytest.mark.parametrize("protocol", ["linear", "grad", "gradfeat", "finetune", "knn"])
def test_each_protocol(tmp_path, protocol):
    db = tmp_path / "r.db"
    # In one epoch a random encoder's fine-tuning trains from nn.Linear's start at lr
    # 1e-2; from its probe, or at 1e-3, it is stored as failed (ends below the probe,
    # or stays at chance: tests/protocols/test_finetune_start.py).
    opts = ["FINETUNE.OPTIMIZERS", "['adam']", "DATA.LABEL_FRACTION", "0.3",
            "FINETUNE.HEAD_INIT", "random", "TRAIN.LR_BY_PROTOCOL.FINETUNE", "0.01"]
    assert run_eval(["--protocol", protocol, *FAST, "--results", str(db), *opts]) == 0
    (row,) = rows(db)
    assert row[0] == protocol and row[1].startswith("val_")


def test_listing(capsys):
    assert run_eval(["--list-protocols", "--list-datasets"]) == 0
    out = capsys.readouterr().out.split()
    assert {"gradfeat", "knn", "mnist5k", "digits"} <= set(out)
    assert run_eval(["--list-models", "timm:resnet1*"]) == 0
    assert "timm:resnet18" in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "timm:no_such_net"], "no_such_net"),
        (["--model", "nosource:thing"], "nosource"),
        (["--dataset", "imagenet22k"], "imagenet22k"),
        (["--weights", "/no/such/file.pt"], "not found"),
        (["--split", "conv9"], "conv9"),
        (["--config", "missing.yaml"], "not found"),
        (["TRAIN.EPOCHS", "many"], "Type mismatch"),
        (["--epochs"], "expected one argument"),
        (["--protocol", "ridge"], "invalid choice"),
        (["--results", "/no/such/dir/r.db"], "does not exist"),
    ],
)
def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    db = tmp_path / "r.db"
    base = ["--model", "bigan_encoder", "--weights", "random", "--dataset", "digits",
            "--epochs", "1", "--results", str(db)]
    assert run_eval(base + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not db.exists() and not (tmp_path / "runs").exists()


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run_eval(["--model", "bigan_encoder", "--weights", str(bad),
                     "--results", str(tmp_path / "r.db")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_offline_pretrained_names_the_alternatives(tmp_path, capsys):
    assert run_eval(["--model", "timm:resnet18", "--results", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert "--weights random" in err and "--weights PATH" in err


def test_a_diverged_protocol_is_stored_as_such_and_the_others_kept(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert run_eval(["--protocol", "linear", "finetune", *FAST, "--results", str(db),
                     "FINETUNE.OPTIMIZERS", "['sgd']", "SGD.WEIGHT_DECAY", "1e30"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("error: finetune diverged (sgd, lr 0.001: training loss is")
    assert err[-1].endswith("the 1 finished protocol(s) were stored")
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT protocol, value, status FROM results").fetchall()
    assert stored[0][0] == "linear" and stored[0][1] > 0.5 and stored[0][2] == "ok"
    assert stored[1] == ("finetune", None, "diverged")
    row = next(line for line in captured.out.splitlines() if line.startswith("| bigan"))
    assert "| diverged¹ |" in row
    assert captured.out.count("| model |") == 1  # one summary table, failures or not
    assert "¹ finetune diverged: sgd, lr 0.001: training loss is" in captured.out


def test_protocol_list_input_size_and_interrupt_keeps_finished_rows(
    tmp_path, capsys, monkeypatch
):
    db = tmp_path / "r.db"
    real_run = eval_script.evaluate.__globals__["iter_protocols"]

    def interrupted(names, *args, **kwargs):
        for result in real_run(names, *args, **kwargs):
            yield result
            raise KeyboardInterrupt

    monkeypatch.setitem(eval_script.evaluate.__globals__, "iter_protocols", interrupted)
    assert run_eval([*FAST, "--input-size", "24", "--results", str(db),
                     "--protocol", "knn", "linear", "KNN.K", "10"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT protocol, value, extra FROM results").fetchall()
    assert stored[0] == "knn" and stored[1] > 0.3
    assert '"input_size": [3, 24, 24]' in stored[2]
    (saved,) = (tmp_path / "runs").glob("*.yaml")
    assert "K: 10" in saved.read_text() and "INPUT_SIZE: 24" in saved.read_text()


def test_exit_status_of_the_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval.py"), "--dataset", "nope",
         "--results", str(tmp_path / "r.db")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


def test_ablation_runs_get_their_own_row(tmp_path):
    db = tmp_path / "r.db"
    common = ["--protocol", "grad", *FAST, "--results", str(db)]
    assert run_eval(common) == 0
    assert run_eval(common + ["ABLATION.THETA2", "random"]) == 0
    with sqlite3.connect(db) as conn:
        weights = [w for (w,) in conn.execute("SELECT weights FROM results")]
    assert weights == ["random", "random; θ1=pretrained θ2=random ω=pretrained"]


def test_random_weights_are_the_same_network_for_the_same_seed():
    import torch

    from gradfeat_plugin.config import load_config
    from gradfeat_plugin.evaluate import load_inputs

    def weights(seed: int) -> list:
        cfg = load_config(opts=["MODEL.WEIGHTS", "random", "DATA.DATASET", "digits",
                                "TRAIN.SEED", str(seed)])
        return list(load_inputs(cfg)[0].model.state_dict().values())

    torch.manual_seed(123)  # whatever the global state was
    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
