from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time
from datetime import datetime, timezone

import pytest
import torch

from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.results import ResultsStore, default_results_path, new_run_id

from .records import make_run

PROTOCOLS = ("linear", "grad", "gradfeat", "finetune", "knn")


def test_round_trip_keeps_every_field(tmp_path):
    store = ResultsStore(tmp_path / "sub" / "results.db")
    config = "TRAIN:\n  EPOCHS: 3\n"
    record = dict(
        model="timm:resnet18", weights="random", split=["layer4.0", "layer4.1"],
        dataset="cifar10", protocol="gradfeat", metric="val_top1", value=0.625,
        epochs=3, seed=7, wall_time_s=12.5, peak_memory_bytes=2**30,
        flops=1_819_065_856, params=11_689_512, trainable_params=5130, config=config,
        extra={"lr": 1e-3},
    )
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = store.add_run([record])
    (stored,) = store.records()
    assert stored["run_id"] == run_id
    assert stored["split"] == "layer4.0,layer4.1"
    for name in ("model", "weights", "dataset", "protocol", "metric", "value", "epochs",
                 "seed", "wall_time_s", "peak_memory_bytes", "flops", "params",
                 "trainable_params", "config", "extra"):
        assert stored[name] == record[name], name
    assert stored["config_hash"] == hashlib.sha256(config.encode()).hexdigest()
    assert stored["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    packages = {"torch", "torchvision", "timm", "lightly", "gradfeat-plugin"}
    assert packages <= set(stored["versions"])
    assert datetime.fromisoformat(stored["timestamp"]) >= before
    assert datetime.fromisoformat(stored["timestamp"]).utcoffset().total_seconds() == 0


def test_records_filter_by_column_and_by_list(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    values = {p: 0.1 * (i + 1) for i, p in enumerate(PROTOCOLS)}
    first = store.add_run(make_run(values, seed=0))
    store.add_run(make_run(values, seed=1, model="zoo:other"))
    assert len(store) == 10
    assert [r["protocol"] for r in store.records(run_id=first)] == list(PROTOCOLS)
    picked = store.records(protocol=["linear", "knn"], model="zoo:other")
    assert [(r["protocol"], r["value"], r["seed"]) for r in picked] == [
        ("linear", 0.1, 1), ("knn", 0.5, 1)]
    with pytest.raises(ValueError, match="unknown column"):
        store.records(colour="red")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"value": None}, "misses value"),
        ({"colour": "red"}, "unknown record fields colour"),
        ({"value": float("nan")}, "finite"),
        ({"seed": 1.5}, "integer"),
        ({"extra": {"x": object()}}, "JSON"),
    ],
)
def test_invalid_record_in_a_run_writes_nothing(tmp_path, bad, message):
    store = ResultsStore(tmp_path / "r.db")
    records = make_run({"linear": 0.8, "gradfeat": 0.9})
    records[1].update(bad)
    with pytest.raises(ValueError, match=message):
        store.add_run(records)
    assert len(store) == 0


def test_failure_inside_the_transaction_rolls_back_earlier_rows(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    # The second insert breaks UNIQUE(run_id, protocol) after the first succeeded.
    with pytest.raises(sqlite3.IntegrityError):
        store.add_run(make_run({"linear": 0.8}) + make_run({"linear": 0.9}))
    # A failure raised by the database itself on the third of five inserts.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER disk_full BEFORE INSERT ON results "
            "WHEN NEW.protocol = 'gradfeat' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        store.add_run(make_run({p: 0.5 for p in PROTOCOLS}))
    assert len(store) == 0


def _die_inside_a_write(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO results (run_id, model, weights, dataset, protocol, metric, "
        "value, versions, timestamp) "
        "VALUES ('dead', 'm', 'w', 'd', 'linear', 'val_top1', 1, '{}', 't')"
    )
    os._exit(1)  # killed before COMMIT


def test_interrupted_writer_leaves_no_row_and_no_lock(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    process = multiprocessing.get_context("fork").Process(
        target=_die_inside_a_write, args=(str(store.path),))
    process.start()
    process.join(30)
    assert process.exitcode == 1
    assert len(store) == 0
    store.add_run(make_run({"linear": 0.8}))
    assert [r["value"] for r in store.records()] == [0.8]


def _write_runs(path: str, worker: int, n_runs: int, barrier) -> None:
    store = ResultsStore(path)  # every worker may be the one creating the schema
    barrier.wait()
    for run in range(n_runs):
        values = {p: (worker * 100 + run) / 1000 for p in PROTOCOLS}
        store.add_run(make_run(values, seed=run, model=f"zoo:worker{worker}"))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.db")
    n_workers, n_runs = 4, 15
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(n_workers)
    workers = [context.Process(target=_write_runs, args=(path, w, n_runs, barrier))
               for w in range(n_workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * n_workers
    records = ResultsStore(path, create=False).records()
    assert len(records) == n_workers * n_runs * len(PROTOCOLS)
    runs: dict[str, list[dict]] = {}
    for r in records:
        runs.setdefault(r["run_id"], []).append(r)
    assert len(runs) == n_workers * n_runs
    for rows in runs.values():
        assert sorted(r["protocol"] for r in rows) == sorted(PROTOCOLS)
        assert len({(r["model"], r["seed"], r["value"]) for r in rows}) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _hold_write_lock(path: str, seconds: float, locked) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")


def test_writer_waits_for_a_held_lock(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    context = multiprocessing.get_context("fork")
    locked = context.Event()
    holder = context.Process(
        target=_hold_write_lock, args=(str(store.path), 1.0, locked))
    holder.start()
    assert locked.wait(30)
    start = time.perf_counter()
    store.add_run(make_run({"linear": 0.8}))
    waited = time.perf_counter() - start
    holder.join(30)
    assert waited > 0.5
    assert len(store) == 1


def test_missing_or_foreign_files_are_user_errors(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(GradfeatError, match="does not exist"):
        ResultsStore(missing, create=False)
    assert not missing.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not sqlite at all, just some text that is long enough " * 4)
    with pytest.raises(GradfeatError, match="not a SQLite results database"):
        ResultsStore(garbage)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(GradfeatError, match="another program"):
        ResultsStore(foreign)
    with pytest.raises(GradfeatError, match="folder"):
        ResultsStore(tmp_path)


def test_default_path_and_run_ids(monkeypatch, tmp_path):
    monkeypatch.delenv("GRADFEAT_RESULTS", raising=False)
    assert default_results_path() == os.path.join(".", "gradfeat_results.db")
    monkeypatch.setenv("GRADFEAT_RESULTS", str(tmp_path / "env.db"))
    assert default_results_path() == str(tmp_path / "env.db")
    assert ResultsStore().path == tmp_path / "env.db"
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_schema_1_stores_are_read_as_they_are_and_upgraded_when_written(tmp_path):
    path = tmp_path / "old.db"
    # A store written by the first release (schema 1): the old docs/results.db.
    path.write_bytes(open(os.path.join(os.path.dirname(__file__), "data",
                                       "schema1_results.db"), "rb").read())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    old = ResultsStore(path, create=False).records()
    assert old and {r["status"] for r in old} == {"ok"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    store = ResultsStore(path)
    diverged = make_run({"finetune": 0.0}, status="diverged", reason="loss is nan")
    diverged[0]["value"] = None
    run_id = store.add_run(diverged)
    assert store.records()[:-1] == old
    (row,) = store.records(run_id=run_id)
    assert (row["value"], row["status"], row["reason"]) == (None, "diverged", "loss is nan")
    with pytest.raises(ValueError, match="misses value"):
        store.add_run(make_run({"linear": None}))
    with pytest.raises(ValueError, match="a failed record has no value"):
        store.add_run(make_run({"linear": 0.5}, status="failed"))
