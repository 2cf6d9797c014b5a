"""benchmarks/reproduce_embedded.sh: the study's run list, and a stopped study that
resumes where it stopped (each run's ``eval.py`` replaced by a recorder)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce_embedded.sh"

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && exit 1;; esac
exit 0
"""


def _study(tmp_path: Path, pattern: str, fail_on: str = "") -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "CALLS": str(calls), "FAIL_ON": fail_on}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "study.db"), "2", pattern],
        env=env, capture_output=True, text=True, timeout=120,
    )
    return done.returncode, calls.read_text().splitlines()


def test_every_run_of_a_model_three_seeds_both_initialisations(tmp_path):
    code, calls = _study(tmp_path, "zoo:bigan_ali")
    assert code == 0
    # Per seed: 3 label fractions, and per θ2 depth the pretrained row and the four
    # settings with a random part, each drawn the default way and the authors' way.
    assert len(calls) == 3 * (3 + 3 * (1 + 4 * 2))
    for seed in (0, 1, 2):
        mine = [c for c in calls if f"--seed {seed}" in c]
        assert len([c for c in mine if "ABLATION.INIT ntk" in c]) == 3 * 4
        assert len([c for c in mine if "ABLATION.INIT default" in c]) == 3 * 4
        fractions = {c.split("--label-fraction ")[1] for c in mine if "--label-fraction" in c}
        assert fractions == {"1.0", "0.1", "0.02"}
    assert all(c.startswith("benchmarks/eval.py --dataset mnist5k --results ") for c in calls)


def test_a_stopped_study_reruns_only_what_did_not_finish(tmp_path):
    code, first = _study(tmp_path, "zoo:bigan_ali", fail_on="--seed 2")
    assert code != 0  # a failed run is reported, not hidden
    done = (tmp_path / "study.db.done").read_text().splitlines()
    assert len(first) == 90 and len(done) == 60
    assert not any("--seed 2" in line for line in done)
    code, second = _study(tmp_path, "zoo:bigan_ali")
    assert code == 0
    assert len(second) == 30 and all("--seed 2" in c for c in second)
    assert len((tmp_path / "study.db.done").read_text().splitlines()) == 90
    times = (tmp_path / "study.db.times").read_text().splitlines()
    assert len(times) == 90 and all(line.split()[0].isdigit() for line in times)
    code, third = _study(tmp_path, "zoo:bigan_ali")
    assert code == 0 and third == []
