"""The command lines under faults of the machine, not of the input: a full disk, an
unwritable cache folder, a busy results store, Ctrl-C during training, the leftovers
of killed runs. Each is one ``error:`` line and exit status 2 (130 for Ctrl-C), with
nothing half-written and no cache folder left behind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.protocols import _cache
from gradfeat_plugin.protocols.linear import LinearProbeClassifier
from gradfeat_plugin.results import ResultsStore
from gradfeat_plugin.results import store as store_module
from gradfeat_plugin.results.cli import BEGIN_MARK, END_MARK, leaderboard_main
from gradfeat_plugin.zoo import registry

from .test_hostile_inputs import (  # noqa: F401  (fixtures)
    BASE,
    _add,
    _encoder_state,
    assert_refused,
    no_training,
    no_work,
    run_eval,
    snapshot,
    store,
)

#: The quickest run that stores θ1's outputs: the linear probe on a tenth of digits.
QUICK = [*BASE, "--protocol", "linear", "--label-fraction", "0.1"]


def cache_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("gradfeat-cache-"))


# -- DATA.CACHE disk ---------------------------------------------------------------

def test_disk_cache_without_room_stops_before_the_pass(store, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(_cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        10**6, 10**6 - 1000, 1000))
    before = snapshot(tmp_path)
    status = run_eval([*QUICK, "--results", str(store), "DATA.CACHE", "disk",
                       "DATA.CACHE_DIR", str(cache)])
    line = assert_refused(status, capsys, f"in {cache}, which has 0.0 MB free; free space")
    assert line.startswith("error: DATA.CACHE disk needs ")
    assert snapshot(tmp_path) == before and cache_folders(cache) == []


def test_full_disk_while_allocating_the_cache_is_an_error(store, tmp_path, monkeypatch, capsys):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_cache.os, "posix_fallocate", full)
    before = snapshot(tmp_path)
    status = run_eval([*QUICK, "--results", str(store), "DATA.CACHE", "disk",
                       "DATA.CACHE_DIR", str(tmp_path)])
    assert_refused(status, capsys, f"cannot store the θ1 cache in {tmp_path}: the disk has "
                   "no room for its")
    assert snapshot(tmp_path) == before and cache_folders(tmp_path) == []


def test_disk_cache_files_are_allocated_not_sparse(tmp_path):
    store = _cache._Store("disk", torch.device("cpu"), torch.float32, str(tmp_path))
    store.allocate((256, 1024), torch.zeros(1))
    (folder,) = cache_folders(tmp_path)
    info = os.stat(tmp_path / folder / "1.bin")
    assert info.st_size == 256 * 1024 * 4
    assert info.st_blocks * 512 >= info.st_size  # blocks reserved: no SIGBUS later
    store.close()
    assert cache_folders(tmp_path) == []


def _unwritable(monkeypatch, folder: Path) -> None:
    # Tests may run as root, for whom chmod changes nothing: the folder alone is
    # reported read-only, as the operating system would for another user.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and not (
        mode & os.W_OK and os.path.realpath(path) == str(folder)))


@pytest.mark.parametrize("kind", ["read-only", "file", "under-a-file", "link-to-read-only",
                                  "dangling-link"])
def test_unusable_cache_dir_is_refused_before_work(store, no_work, tmp_path, monkeypatch,
                                                    capsys, kind):
    target = tmp_path / "cache"
    if kind == "read-only":
        target.mkdir()
        _unwritable(monkeypatch, target)
        fragment = f"folder {target} is not writable"
    elif kind == "file":
        target.write_text("not a folder\n")
        fragment = f"{target} is not a folder"
    elif kind == "under-a-file":
        (tmp_path / "file").write_text("not a folder\n")
        target = tmp_path / "file" / "cache"
        fragment = f"{tmp_path / 'file'} is not a folder"
    elif kind == "link-to-read-only":
        (tmp_path / "locked").mkdir()
        _unwritable(monkeypatch, tmp_path / "locked")
        os.symlink(tmp_path / "locked", target)
        fragment = f"folder {tmp_path / 'locked'} is not writable"
    else:
        os.symlink(tmp_path / "gone", target)
        fragment = f"{target} is not a folder"
    before = snapshot(tmp_path)
    status = run_eval([*BASE, "--results", str(store), "DATA.CACHE", "disk",
                       "DATA.CACHE_DIR", str(target)])
    line = assert_refused(status, capsys, fragment)
    assert line.startswith(f"error: DATA.CACHE_DIR {target}")
    assert snapshot(tmp_path) == before


def test_runs_folder_that_is_a_file_is_refused_before_work(store, no_work, capsys):
    (store.parent / "runs").write_text("mine\n")
    before = snapshot(store.parent)
    assert_refused(run_eval([*BASE, "--results", str(store)]), capsys,
                   f"{store.parent / 'runs'} (where run configs are saved")
    assert snapshot(store.parent) == before


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_cache_folders_of_dead_processes_are_removed(store, tmp_path, capsys):
    cache = tmp_path / "cache"
    host = _cache._host_tag()
    dead = cache / f"gradfeat-cache-{_dead_pid()}-{host}-x1"
    alive = cache / f"gradfeat-cache-{os.getppid()}-{host}-x2"
    elsewhere = cache / f"gradfeat-cache-{_dead_pid()}-{'0' * 8}-x3"  # another host's
    unknown = cache / "gradfeat-cache-abc"
    for folder in (dead, alive, elsewhere, unknown):
        folder.mkdir(parents=True)
        (folder / "1.bin").write_bytes(b"\0" * 100)
    status = run_eval([*QUICK, "--results", str(store), "DATA.CACHE", "disk",
                       "DATA.CACHE_DIR", str(cache)])
    assert status == 0, capsys.readouterr().err
    assert cache_folders(cache) == sorted(p.name for p in (alive, elsewhere, unknown))


def test_a_killed_run_leaves_a_folder_the_next_run_removes(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    pid = os.fork()
    if pid == 0:  # a run killed during the θ1 pass, its cache folder made
        store = _cache._Store("disk", torch.device("cpu"), torch.float32, str(cache))
        store.allocate((4, 4), torch.zeros(1))
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (left,) = cache_folders(cache)
    assert _cache.remove_stale_cache_folders(str(cache)) == [str(cache / left)]
    assert cache_folders(cache) == []


# -- input sizes -------------------------------------------------------------------

@pytest.mark.parametrize("size, fragment", [
    ("32.5", "input size must be N or C,H,W with positive integers, got 32.5"),
    ("1,32,32", "backbone bigan_encoder takes 3-channel images (its first layer conv1.0 "
                "has in_channels=3), but the input size is 1,32,32; pass --input-size 3,32,32"),
    ("4,32,32", "takes 3-channel images"),
    ("100000", "input size 100000 has a side above 4096 pixels"),
    ("3,2,2", "backbone bigan_encoder cannot take inputs of size 3,2,2"),
])
def test_input_sizes_the_model_cannot_take(store, no_training, capsys, size, fragment):
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--results", str(store), "--input-size", size])
    assert_refused(status, capsys, fragment)
    assert snapshot(store.parent) == before


# -- the zoo -----------------------------------------------------------------------

def test_truncated_zoo_manifest_is_an_error(store, no_training, tmp_path, monkeypatch, capsys):
    shipped = Path(registry.shipped_weights_dir())
    copy = tmp_path / "weights"
    shutil.copytree(shipped, copy)
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    monkeypatch.setattr(registry, "shipped_weights_dir", lambda: str(copy))
    monkeypatch.setattr(registry, "zoo_cache_dir", lambda: str(tmp_path / "zoo-cache"))
    before = snapshot(store.parent)
    status = run_eval([*BASE, "--model", "zoo:rotation_mnist5k", "--weights", "pretrained",
                       "--results", str(store)])
    assert_refused(status, capsys, f"the shipped weights' manifest {copy / 'manifest.json'} "
                   "is damaged")
    assert snapshot(store.parent) == before


# -- the results store -------------------------------------------------------------

def _disk_full_after(monkeypatch, pages: int) -> None:
    """Every store connection may grow the file to ``pages`` pages, as a full disk would."""
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)


def test_results_store_on_a_full_disk(store, monkeypatch, capsys):
    with sqlite3.connect(store) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    _disk_full_after(monkeypatch, pages)
    with pytest.raises(GradfeatError, match="the disk is full"):
        for value in range(100):  # fill the pages there are
            _add(ResultsStore(store), value / 100)
    before = snapshot(store.parent)
    status = run_eval([*QUICK, "--protocol", "knn", "--results", str(store), "KNN.K", "5"])
    assert_refused(status, capsys, f"cannot write to results database {store}: the disk "
                   "is full")
    assert snapshot(store.parent) == before  # no runs/ config, no -wal/-shm


def test_new_results_store_on_a_full_disk_is_not_left_half_made(tmp_path, monkeypatch):
    _disk_full_after(monkeypatch, 1)
    with pytest.raises(GradfeatError, match="the disk is full"):
        ResultsStore(tmp_path / "r.db")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_store_takes_its_locks_and_leaves_no_side_files(store, monkeypatch):
    opened = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect",
                        lambda *a, **k: opened.append(str(a[0])) or real_connect(*a, **k))
    before = snapshot(store.parent)
    assert store_module.verify_store(store, writable=False, must_exist=True) == 2
    # An immutable open takes no locks: a writer's checkpoint could change pages
    # under it, and the store would be called corrupt.
    assert opened and not any("immutable" in uri for uri in opened)
    assert snapshot(store.parent) == before


def test_a_store_locked_too_long_is_busy_not_corrupt(store, monkeypatch, capsys):
    monkeypatch.setattr(store_module, "READ_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        before = snapshot(store.parent)
        line = assert_refused(leaderboard_main(["--results", str(store)]), capsys,
                              f"results database {store} stayed locked by another process")
        assert "not a" not in line and "damaged" not in line
        assert snapshot(store.parent) == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# -- Ctrl-C --------------------------------------------------------------------------

def test_ctrl_c_during_training_is_an_interrupt(store, tmp_path, monkeypatch, capsys):
    def interrupt(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(LinearProbeClassifier, "training_step", interrupt)
    handler = signal.getsignal(signal.SIGINT)
    before = snapshot(tmp_path)
    status = run_eval([*QUICK, "--results", str(store), "DATA.CACHE", "disk",
                       "DATA.CACHE_DIR", str(tmp_path)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 130 and lines[-1] == "error: interrupted", err
    assert not [line for line in lines if line.startswith("error:")][:-1]
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works again
    assert snapshot(tmp_path) == before and cache_folders(tmp_path) == []


# -- the leaderboard's outputs -------------------------------------------------------

def test_update_writes_through_a_link(store):
    docs = store.parent / "docs"
    docs.mkdir()
    board = docs / "RESULTS.md"
    board.write_text(f"# Results\n{BEGIN_MARK}\nold\n{END_MARK}\ntail\n")
    link = store.parent / "README.md"
    os.symlink(board, link)
    assert leaderboard_main(["--results", str(store), "--update", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(board)
    text = board.read_text()
    assert "old" not in text and "| zoo:tiny |" in text and text.endswith(f"{END_MARK}\ntail\n")
    assert sorted(p.name for p in docs.iterdir()) == ["RESULTS.md"]


# -- θ2 ------------------------------------------------------------------------------

@pytest.mark.parametrize("split, fragments", [
    ("conv3.1", ["θ2 module conv3.1 is a normalisation layer", "holds 0.028 % of"]),
    ("conv1", ["θ2 (conv1) holds 0.17 % of the parameters, under 1 %"]),
])
def test_a_tiny_or_norm_layer_split_is_warned_about(store, no_training, capsys, split,
                                                    fragments):
    with pytest.raises(AssertionError, match="training started"):
        run_eval([*BASE, "--results", str(store), "--split", split])
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: θ2")]
    assert len(warnings) == len(fragments)
    for line, fragment in zip(warnings, fragments):
        assert fragment in line, line


def test_the_default_split_is_not_warned_about(store, no_training, capsys):
    with pytest.raises(AssertionError, match="training started"):
        run_eval([*BASE, "--results", str(store)])
    assert "warning: θ2" not in capsys.readouterr().err


# -- a cache dtype that overflows ----------------------------------------------------

def test_fp16_cache_overflow_names_the_cache_dtype(store, tmp_path, capsys):
    state = _encoder_state()
    # θ1 (conv1..conv3) ends in a BatchNorm: scaled up, its outputs exceed fp16's range.
    state["conv3.1.weight"] = state["conv3.1.weight"] * 1e6
    torch.save(state, tmp_path / "loud.pth")
    status = run_eval([*QUICK, "--weights", str(tmp_path / "loud.pth"), "--results",
                       str(store), "DATA.CACHE", "memory", "DATA.CACHE_DTYPE", "float16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("error: linear failed")
    assert "overflow DATA.CACHE_DTYPE float16" in err[0]
    (row,) = [r for r in ResultsStore(store).records() if r["protocol"] == "linear"
              and r["status"] == "failed"]
    assert "DATA.CACHE_DTYPE float16" in row["reason"] and row["value"] is None
