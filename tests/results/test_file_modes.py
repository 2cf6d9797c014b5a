"""Files the results code writes follow the umask, as any new file does."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gradfeat_plugin.results import ResultsStore
from gradfeat_plugin.results._files import create_temporary_file
from gradfeat_plugin.results.cli import leaderboard_main

from .records import make_run

UMASKS = [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=UMASKS, ids=lambda p: f"umask{p[0]:03o}")
def umask(request):
    """Run the test under a umask; yields the mode a new file gets under it."""
    mask, expected = request.param
    old = os.umask(mask)
    try:
        yield expected
    finally:
        os.umask(old)


def test_leaderboard_outputs_follow_the_umask(tmp_path, umask):
    db = tmp_path / "r.db"
    ResultsStore(db).add_run(make_run({"linear": 0.8, "gradfeat": 0.86}))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("<!-- leaderboard:begin -->\n<!-- leaderboard:end -->\n")
    assert mode(doc) == umask
    out, plot = tmp_path / "board.md", tmp_path / "board.png"
    assert leaderboard_main(["--results", str(db), "--out", str(out),
                             "--plot", str(plot), "--update", str(doc)]) == 0
    assert (mode(out), mode(plot), mode(doc)) == (umask, umask, umask)
    assert mode(db) == umask  # the store, created by this test's ResultsStore


def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask):
    db = tmp_path / "r.db"
    ResultsStore(db).add_run(make_run({"linear": 0.8}))
    doc, out = tmp_path / "RESULTS.md", tmp_path / "board.md"
    doc.write_text("<!-- leaderboard:begin -->\n<!-- leaderboard:end -->\n")
    out.write_text("| model |\n")
    os.chmod(doc, 0o640)
    os.chmod(out, 0o604)
    assert leaderboard_main(["--results", str(db), "--out", str(out),
                             "--update", str(doc)]) == 0
    assert (mode(doc), mode(out)) == (0o640, 0o604)
    assert "| model |" in out.read_text() and "80.00" in out.read_text()


def test_temporary_names_are_unique_and_never_reused(tmp_path):
    names = []

    def make() -> None:
        for _ in range(50):
            names.append(create_temporary_file(str(tmp_path), ".x.", ".md"))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 200 == len(list(tmp_path.iterdir()))
    assert all(Path(n).name.startswith(".x.") and n.endswith(".md") for n in names)
