"""The command lines under hostile input: each bad input is one ``error:`` line and
exit status 2, found before any work, with the results store and every file unchanged."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradfeat_plugin.evaluate as evaluate_module
from gradfeat_plugin.backbones import create_backbone
from gradfeat_plugin.cli import main_guard
from gradfeat_plugin.config import get_cfg
from gradfeat_plugin.data import dataset_targets, get_dataset
from gradfeat_plugin.results import ResultsStore, leaderboard_table, render
from gradfeat_plugin.results.cli import leaderboard_main

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("eval_script", ROOT / "benchmarks" / "eval.py")
eval_script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(eval_script)

BASE = ["--model", "bigan_encoder", "--weights", "random", "--dataset", "digits",
        "--epochs", "1", "--no-progress"]


def _config(**changes) -> str:
    cfg = get_cfg()
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg.dump()


def _add(store: ResultsStore, value: float, model: str = "zoo:tiny", seed: int = 0,
         config: str | None = None, protocol: str = "linear") -> None:
    store.add_run([dict(model=model, weights="pretrained", dataset="digits",
                        protocol=protocol, metric="val_top1", value=value, seed=seed,
                        config=config if config is not None else _config())])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def store(tmp_path) -> Path:
    """A store holding one result, alone in its folder."""
    path = tmp_path / "r.db"
    _add(ResultsStore(path), 0.5)
    return path


@pytest.fixture()
def no_training(monkeypatch):
    """Fails the test if a run gets as far as training a protocol."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(evaluate_module, "iter_protocols", refuse)


@pytest.fixture()
def no_work(monkeypatch, no_training):
    """Fails the test if a run builds a backbone or loads data."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(evaluate_module, "load_inputs", refuse)


def assert_refused(status: int, capsys, fragment: str) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def run_eval(argv: list[str]) -> int:
    return main_guard(lambda: eval_script.main(argv))


# -- flags and config values -------------------------------------------------

@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--epochs", "-1"], "TRAIN.EPOCHS must be at least 1, got -1"),
        (["--epochs", "0"], "TRAIN.EPOCHS must be at least 1, got 0"),
        (["--batch-size", "0"], "TRAIN.BATCH_SIZE must be at least 1, got 0"),
        (["--seed", "-1"], "TRAIN.SEED must be an integer from 0 to 4294967295"),
        (["--devices", "0"], "TRAINER.DEVICES must be an integer from 1"),
        (["--num-nodes", "0"], "TRAINER.NUM_NODES must be an integer from 1"),
        (["--precision", "bogus"], "TRAINER.PRECISION must be one of"),
        (["--accelerator", "tpu9"], "TRAINER.ACCELERATOR must be one of"),
        (["--strategy", "ddp9"], "TRAINER.STRATEGY must be one of"),
        (["--label-fraction", "0"], "DATA.LABEL_FRACTION must be a finite number in (0, 1]"),
        (["--label-fraction", "1.5"], "DATA.LABEL_FRACTION must be"),
        (["TRAIN.LR", "0.0"], "TRAIN.LR must be a finite number in (0, inf), got 0.0"),
        (["TRAIN.LR", "-1.0"], "TRAIN.LR must be a finite number in (0, inf), got -1.0"),
        (["TRAIN.LR", "1e999"], "TRAIN.LR must be a finite number in (0, inf), got inf"),
        (["TRAIN.OPTIMIZER", "rmsprop"], "TRAIN.OPTIMIZER must be one of adam, sgd"),
        (["TRAIN.LR_DECAY", "0.0"], "TRAIN.LR_DECAY must be"),
        (["TRAIN.CACHE_BATCH_SIZE", "0"], "TRAIN.CACHE_BATCH_SIZE must be at least 1"),
        (["FINETUNE.OPTIMIZERS", "[]"], "FINETUNE.OPTIMIZERS must be a non-empty list"),
        (["FINETUNE.OPTIMIZERS", "['adam', 'adam']"], "without repeats"),
        (["FINETUNE.OPTIMIZERS", "['lbfgs']"], "FINETUNE.OPTIMIZERS must be one of"),
        (["DATA.NUM_WORKERS", "-2"], "DATA.NUM_WORKERS must be an integer from -1 to 256"),
        (["DATA.CACHE", "ram"], "DATA.CACHE must be one of auto, memory, disk, off"),
        (["DATA.CACHE_DTYPE", "float64"],
         "DATA.CACHE_DTYPE must be one of float32, float16, bfloat16"),
        (["KNN.K", "0"], "KNN.K must be at least 1, got 0"),
        (["KNN.TEMPERATURE", "0.0"], "KNN.TEMPERATURE must be"),
        (["ADAM.BETAS", "(1.5, 0.999)"], "ADAM.BETAS[0] must be"),
        (["ABLATION.THETA1", "half"], "ABLATION.THETA1 must be one of pretrained, random"),
        (["MODEL.ENGINE", "magic"], "MODEL.ENGINE must be one of auto, dual, func, forward_ad"),
    ],
)
def test_bad_flags_and_values_stop_before_any_work(
    store, no_work, capsys, argv, fragment
):
    before = snapshot(store.parent)
    assert_refused(run_eval([*BASE, "--results", str(store), *argv]), capsys, fragment)
    assert snapshot(store.parent) == before


def test_knn_k_larger_than_the_training_set(store, no_training, capsys):
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--protocol", "knn", "--results", str(store),
                       "--label-fraction", "0.1", "KNN.K", "100000"])
    assert_refused(status, capsys, "KNN.K is 100000 but the training set has only 130 images")
    assert snapshot(store.parent) == before


# -- YAML files ----------------------------------------------------------------

def alias_bomb(levels: int) -> str:
    """Each level lists the previous one nine times: 9 ** (levels + 1) values."""
    names = "abcdefghij"[: levels + 1]
    return "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
        for previous, name in zip(names, names[1:])
    )


@pytest.mark.parametrize(
    "files, fragment",
    [
        ({"c.yaml": alias_bomb(8)}, "uses 72 aliases; at most 64"),
        ({"c.yaml": alias_bomb(7)}, "expands to more than 100,000 values"),
        ({"c.yaml": "a: &a [*a]\n"}, "has an alias that contains itself"),
        ({"c.yaml": "[" * 2000 + "]" * 2000}, "nests deeper than 32 levels"),
        ({"c.yaml": "_BASE_: d.yaml\n", "d.yaml": "_BASE_: c.yaml\n"},
         "has a _BASE_ cycle: c.yaml -> d.yaml -> c.yaml"),
        ({"c.yaml": "_BASE_: c.yaml\n"}, "has a _BASE_ cycle: c.yaml -> c.yaml"),
        ({"c.yaml": "_BASE_: /etc/passwd\n"}, "which is not a .yaml/.yml file"),
        ({"c.yaml": "_BASE_: [a.yaml]\n"}, "has a _BASE_ that is not a file name"),
        ({"c.yaml": "_BASE_: gone.yaml\n"}, "which is not found"),
        ({"c.yaml": ""}, "is empty"),
        ({"c.yaml": "# nothing but a comment\n"}, "is empty"),
        ({"c.yaml": "- TRAIN\n- LR\n"}, "holds a list, not a mapping"),
        ({"c.yaml": "TRAIN:\n  LR: 0.0\n"}, "TRAIN.LR must be a finite number"),
        ({"c.yaml": "x: 1\n" + "#" * (1 << 20)}, "configs are at most 1,048,576"),
        ({"c.yaml": b"TRAIN: \xff\xfe\n"}, "is not UTF-8 text"),
    ],
    ids=["alias-count", "alias-bomb", "recursive-alias", "deep", "base-cycle",
         "base-self", "base-passwd", "base-list", "base-missing", "empty", "comment-only",
         "not-a-mapping", "bad-value", "too-large", "not-utf8"],
)
def test_hostile_config_files(store, no_work, tmp_path, capsys, files, fragment):
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode()
        (tmp_path / name).write_bytes(data)
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--results", str(store), "--config", str(tmp_path / "c.yaml")])
    assert_refused(status, capsys, fragment)
    assert snapshot(store.parent) == before


def test_deep_base_chain_is_refused(store, no_work, tmp_path, capsys):
    for i in range(12):
        (tmp_path / f"c{i}.yaml").write_text(f"_BASE_: c{i + 1}.yaml\n")
    (tmp_path / "c12.yaml").write_text("TRAIN:\n  EPOCHS: 2\n")
    status = run_eval([*BASE, "--results", str(store), "--config", str(tmp_path / "c0.yaml")])
    assert_refused(status, capsys, "_BASE_ chain longer than 8 files")


# -- the results store -----------------------------------------------------------

def _sql(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def _foreign(path: Path) -> Path:
    _sql(path, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('keep me')")
    return path


def _newer(path: Path) -> Path:
    _sql(path, "CREATE TABLE results (x)", "PRAGMA user_version = 99")
    return path


def _damaged(path: Path) -> Path:
    good = path.with_name("good.db")
    ResultsStore(good).add_run([
        dict(model="zoo:tiny", weights="pretrained", dataset="digits", protocol=f"p{i}",
             metric="val_top1", value=i / 200, config=_config()) for i in range(200)])
    data = bytearray(good.read_bytes())
    good.unlink()
    data[4096 * 2: 4096 * 4] = b"\xa5" * 8192  # two pages overwritten
    path.write_bytes(bytes(data))
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00garbage" * 100)
    return path


def _no_results_table(path: Path) -> Path:
    _sql(path, "CREATE TABLE results (x)", "PRAGMA user_version = 1")
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (_foreign, "a SQLite database of another program"),
        (_newer, "written by a newer gradfeat-plugin (schema 99)"),
        (_damaged, "r.db is not a"),
        (_garbage, "is not a SQLite results database"),
        (_no_results_table, "its results table lacks"),
    ],
    ids=["foreign", "newer", "damaged", "garbage", "wrong-columns"],
)
def test_foreign_or_corrupt_store_is_refused_before_work_and_untouched(
    tmp_path, no_work, capsys, make, fragment
):
    path = make(tmp_path / "r.db")
    before = snapshot(tmp_path)
    assert_refused(run_eval([*BASE, "--results", str(path)]), capsys, fragment)
    assert snapshot(tmp_path) == before  # no WAL switch, no -wal/-shm files
    assert leaderboard_main(["--results", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert snapshot(tmp_path) == before


def test_results_path_that_is_not_a_file(tmp_path, no_work, capsys):
    os.mkfifo(tmp_path / "pipe.db")
    assert_refused(run_eval([*BASE, "--results", str(tmp_path / "pipe.db")]), capsys,
                   "is not a regular file")


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        ("value", "'abc'", "value 'abc' is not a finite number"),
        ("value", "NULL", "value is None"),
        ("versions", "'{not json'", "versions is not JSON"),
        ("seed", "'x'", "seed 'x' is not an integer"),
        ("model", "''", "model is ''"),
    ],
)
def test_hand_edited_rows_are_named(store, tmp_path, capsys, column, value, fragment):
    # A copy without NOT NULL, edited as a user with the sqlite3 shell might.
    _sql(store, "CREATE TABLE copy AS SELECT * FROM results", "DROP TABLE results",
         "ALTER TABLE copy RENAME TO results", f"UPDATE results SET {column} = {value}")
    before = snapshot(tmp_path)
    assert_refused(leaderboard_main(["--results", str(store)]), capsys,
                   f"row 1 is damaged ({fragment})")
    assert snapshot(tmp_path) == before


# -- checkpoints ---------------------------------------------------------------

def _encoder_state() -> dict[str, torch.Tensor]:
    return create_backbone("bigan_encoder", weights="random").model.state_dict()


def test_partial_checkpoint_is_an_error_unless_allowed(store, no_training, tmp_path, capsys):
    state = _encoder_state()
    first = next(iter(state))
    torch.save({first: state[first]}, tmp_path / "part.pth")
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--weights", str(tmp_path / "part.pth"),
                       "--results", str(store)])
    line = assert_refused(status, capsys, "loads 1 of 24 tensors of BiGANEncoder; "
                          "19 missing, first: conv1.1.bias, conv1.1.running_mean")
    assert "--allow-partial-weights" in line
    assert snapshot(store.parent) == before


def test_allowed_partial_checkpoint_says_partial(tmp_path, capsys):
    state = _encoder_state()
    torch.save({k: v for k, v in state.items() if not k.startswith("conv4.")},
               tmp_path / "part.pth")
    db = tmp_path / "r.db"
    assert run_eval([*BASE, "--weights", str(tmp_path / "part.pth"), "--results", str(db),
                     "--allow-partial-weights", "--protocol", "knn",
                     "--label-fraction", "0.1", "KNN.K", "5"]) == 0
    (row,) = ResultsStore(db).records()
    assert row["weights"] == f"{tmp_path / 'part.pth'} (partial)"
    assert "part.pth (partial)" in capsys.readouterr().out


def test_url_with_dot_dot_segments_is_refused(store, no_training, capsys):
    before = snapshot(store.parent)
    for url in ("http://127.0.0.1:9/w/../../../etc/model.pth",
                "http://127.0.0.1:9/w/%2e%2e/%2E%2E/model.pth"):
        status = run_eval([*BASE, "--weights", url, "--results", str(store)])
        assert_refused(status, capsys, "its path has '..' segments")
    assert snapshot(store.parent) == before


# -- results sanity ------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["knn", "linear"])
def test_non_finite_backbone_fails_the_protocol(store, tmp_path, capsys, protocol):
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in _encoder_state().items()}
    torch.save(state, tmp_path / "nan.pth")
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--protocol", protocol, "--weights", str(tmp_path / "nan.pth"),
                       "--results", str(store), "--label-fraction", "0.1", "KNN.K", "5"])
    assert status != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "non-finite" in err[0]
    assert snapshot(store.parent) == before


# -- image folders -------------------------------------------------------------

def _image_folder(root: Path, per_class: int = 30) -> Path:
    for part, count in (("train", per_class), ("val", 5)):
        for label, name in enumerate(("c0", "c1")):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((8, 8, 3), 40 + 150 * label, np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_symlink_loop_in_an_image_folder_adds_nothing(tmp_path):
    root = _image_folder(tmp_path / "images")
    os.symlink("..", root / "train" / "c0" / "loop")
    os.symlink(root / "train" / "c0", root / "train" / "c0" / "again")
    splits = get_dataset(f"imagefolder:{root}", input_size=(3, 8, 8))
    assert len(splits.train) == 60
    assert np.bincount(dataset_targets(splits.train)).tolist() == [30, 30]


def test_image_in_two_classes_is_an_error(tmp_path, store, no_training, capsys):
    root = _image_folder(tmp_path / "images", per_class=2)
    os.symlink(root / "train" / "c0" / "0.png", root / "train" / "c1" / "z.png")
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--dataset", f"imagefolder:{root}", "--results", str(store)])
    assert_refused(status, capsys, "is the same file as")
    assert snapshot(store.parent) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_image_is_named_before_training(tmp_path, store, no_training, capsys,
                                                   damage):
    root = _image_folder(tmp_path / "images", per_class=2)
    bad = root / "val" / "c1" / "1.png"
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"\x89PNG\r\n\x1a\n" + b"x" * 40,
                     "truncated": data[: len(data) // 2], "empty": b""}[damage])
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--dataset", f"imagefolder:{root}", "--results", str(store)])
    assert_refused(status, capsys, f"cannot read image {bad}")
    assert snapshot(store.parent) == before


# -- the leaderboard's outputs -------------------------------------------------

@pytest.mark.parametrize("flag", ["--out", "--plot", "--update"])
def test_leaderboard_never_writes_over_the_store(store, capsys, flag):
    before = snapshot(store.parent)
    assert_refused(leaderboard_main(["--results", str(store), flag, str(store)]), capsys,
                   "it is the results database")
    assert snapshot(store.parent) == before


def test_leaderboard_never_writes_over_the_store_through_a_link(store, capsys):
    os.symlink(store, store.parent / "board.md")
    before = snapshot(store.parent)
    assert_refused(leaderboard_main(["--results", str(store), "--out",
                                     str(store.parent / "board.md")]),
                   capsys, "it is the results database")
    assert snapshot(store.parent) == before


@pytest.mark.parametrize("flag, name", [("--out", "notes.txt"), ("--plot", "photo.png"),
                                        ("--out", "board.md")])
def test_leaderboard_never_replaces_a_file_it_did_not_write(store, capsys, flag, name):
    other = store.parent / name
    other.write_bytes(b"\x89PNG\r\n\x1a\nsomeone's picture" if name.endswith("png")
                      else b"my notes\n")
    before = snapshot(store.parent)
    assert_refused(leaderboard_main(["--results", str(store), flag, str(other)]), capsys,
                   f"refusing to replace {other}: it is not a leaderboard")
    assert snapshot(store.parent) == before


def test_leaderboard_replaces_its_own_outputs_only(store, capsys):
    board, plot = store.parent / "board.csv", store.parent / "board.png"
    for fmt in ("md", "csv"):
        assert leaderboard_main(["--results", str(store), "--format", fmt,
                                 "--out", str(board), "--plot", str(plot)]) == 0
    assert board.read_text().startswith("model,θ2,input,dataset,metric,kind,seeds,linear")
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in store.parent.iterdir()) == [
        "board.csv", "board.png", "r.db"]  # no temporary files left
    (store.parent / "data.csv").write_text("id,amount\n1,2\n")
    before = snapshot(store.parent)
    assert leaderboard_main(["--results", str(store), "--format", "csv",
                             "--out", str(store.parent / "data.csv")]) == 2
    assert snapshot(store.parent) == before


@pytest.mark.parametrize("args, fragment", [
    (["--plot", "board.jpg"], "use a .png, .pdf or .svg file name"),
    (["--out", "same.md", "--update", "same.md"], "must name different files"),
])
def test_leaderboard_output_arguments(store, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(store.parent)
    before = snapshot(store.parent)
    assert_refused(leaderboard_main(["--results", str(store), *args]), capsys, fragment)
    assert snapshot(store.parent) == before


# -- escaping ------------------------------------------------------------------

HOSTILE_NAMES = ["zoo:a|b", "zoo:line\nbreak", "<script>alert(1)</script>",
                 "=HYPERLINK(\"http://x\")", "+1+cmd", "-2+3", "@SUM(A1)", "$x^2$ net",
                 "gain $\\sqrt{$ net", "_hidden"]


@pytest.fixture()
def hostile_store(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "r.db")
    for index, name in enumerate(HOSTILE_NAMES):
        _add(store, 0.5 + index / 100, model=name)
    return store.path


def test_markdown_cells_stay_cells(hostile_store):
    table = leaderboard_table(ResultsStore(hostile_store).records())
    lines = render(table, "md").splitlines()
    assert len(lines) == 2 + len(HOSTILE_NAMES)
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines)
    text = "\n".join(lines)
    assert "zoo:a\\|b" in text and "zoo:line<br>break" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    html_text = render(leaderboard_table(ResultsStore(hostile_store).records()), "html")
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text


def test_csv_formulas_are_neutralised(hostile_store):
    text = render(leaderboard_table(ResultsStore(hostile_store).records()), "csv")
    models = [row[0] for row in csv.reader(io.StringIO(text))][1:]
    assert sorted(models) == sorted([
        "zoo:a|b", "zoo:line\nbreak", "<script>alert(1)</script>",
        "'=HYPERLINK(\"http://x\")", "'+1+cmd", "'-2+3", "'@SUM(A1)", "$x^2$ net",
        "gain $\\sqrt{$ net", "_hidden"])


def test_plot_labels_are_literal(hostile_store, tmp_path, capsys):
    plot = tmp_path / "board.png"
    assert leaderboard_main(["--results", str(hostile_store), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000


# -- leaderboard rows keyed by the whole setting ---------------------------------

def test_different_settings_are_never_averaged_as_seeds(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    _add(store, 0.7750, config=_config())
    _add(store, 0.3361, config=_config(DATA__LABEL_FRACTION=0.02))
    _add(store, 0.3561, seed=1, config=_config(DATA__LABEL_FRACTION=0.02, TRAIN__SEED=1))
    _add(store, 0.60, config=_config(TRAIN__EPOCHS=30, TRAIN__LR=0.01))
    # Where results are stored and how many workers ran are not part of a setting.
    _add(store, 0.7950, seed=1, config=_config(TRAIN__SEED=1, RESULTS__PATH="x.db",
                                               DATA__NUM_WORKERS=4))
    table = leaderboard_table(store.records())
    rows = {label: (seeds, str(linear)) for label, seeds, linear in zip(
        table.column("model"), table.column("seeds"), table.column("linear"))}
    assert rows == {
        "zoo:tiny": (2, "78.50 ± 1.41"),
        "zoo:tiny (2 % labels)": (2, "34.61 ± 1.41"),
        "zoo:tiny (30 epochs; lr 0.01)": (1, "60.00"),
    }


def test_rows_without_a_config_are_their_own_setting():
    row = dict(model="m", weights="pretrained", dataset="d", protocol="linear",
               metric="val_top1", seed=0, timestamp="t")
    many = get_cfg()
    many.TRAIN.EPOCHS, many.TRAIN.LR, many.KNN.K, many.TRAIN.OPTIMIZER = 3, 0.5, 7, "sgd"
    table = leaderboard_table([
        {**row, "value": 0.5, "config": None},
        {**row, "value": 0.6, "config": get_cfg().dump()},
        {**row, "value": 0.7, "config": many.dump()},
    ])
    # kNN's k does not change a linear probe's number: it is not said.
    assert dict(zip(table.column("model"), map(str, table.column("linear")))) == {
        "m": "60.00",
        "m (3 epochs; lr 0.5; optimiser sgd)": "70.00",
        "m (no config)": "50.00",
    }


def test_read_only_store_is_refused_before_work(store, no_work, monkeypatch, capsys):
    # Tests may run as root, for whom chmod changes nothing: the store file alone is
    # reported read-only, as the operating system would for another user.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode)
                        and not (mode & os.W_OK and Path(path) == store))
    before = snapshot(store.parent)
    assert_refused(run_eval([*BASE, "--results", str(store)]), capsys,
                   f"results database {store} is read-only")
    assert snapshot(store.parent) == before
