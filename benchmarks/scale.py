"""Memory and data-path cost of the θ1 cache policies at N and 4N images.

Builds synthetic class-per-folder image sets (``imagefolder:``) of N and 4N
training images, then runs ``--protocol gradfeat --epochs 1`` with timm's
resnet18 (random weights, θ2 = ``layer3.1 layer4``) once per ``DATA.CACHE``
policy, each in its own process so that its memory is its own. Each run reports
its peak resident memory (``VmHWM``), its peak anonymous memory (``RssAnon``,
what cannot be paged out; a memory-mapped cache's pages count in RSS but not
there; sampled by a thread, as the kernel keeps no peak of it), the bytes of
θ1's stored outputs, the θ1 pass time, the training epoch time (first step to
last, validation excluded) and the share of the epoch spent waiting for the next
batch (the data path).

Goals: with ``disk`` the peak proportional anonymous memory of the process tree
(``Pss_Anon`` of the process and its DataLoader workers, a shared page counted
once) grows at most 5 % from N to 4N; its ``RssAnon`` at most 10 % from N to 4N
images while the cache grows 4×; the data path takes at most 5 % of a cached
(``memory`` or ``disk``) epoch.

    python benchmarks/scale.py --n 250 --size 112 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

POLICIES = ("memory", "disk", "off", "auto")
SPLIT = ["layer3.1", "layer4"]


# -- the image sets --------------------------------------------------------------

def build_folder(root: Path, train: int, val: int, size: int, classes: int) -> Path:
    """``root/train/classK/*.jpg`` and ``root/val/...``: smooth random images whose
    colour depends on the class (kept when ``root`` already holds them)."""
    done = root / "done"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    tints = rng.uniform(0, 255, size=(classes, 3))
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            label = index % classes
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
            pixels = 0.6 * np.asarray(image, dtype=np.float32) + 0.4 * tints[label]
            noise = rng.normal(0, 8, size=pixels.shape)
            pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:06d}.jpg", quality=90)
    done.write_text("ok")
    return root


# -- one run, in a child process -------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren, ... (DataLoader workers)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _pss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss_Anon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_anon_kb() -> int:
    """Proportional anonymous memory of this process and its descendants: a page
    a forked worker shares with its parent counts once, split between them."""
    pid = os.getpid()
    return sum(_pss_anon_kb(p) for p in (pid, *_descendants(pid)))


class _AnonPeak(threading.Thread):
    """Samples ``RssAnon`` of this process and ``Pss_Anon`` of its process tree
    every ``interval`` seconds and keeps their peaks."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_kb, self.peak_tree_kb, self.running = interval, 0, 0, True

    def _sample(self) -> None:
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
        self.peak_tree_kb = max(self.peak_tree_kb, tree_pss_anon_kb())

    def run(self) -> None:
        while self.running:
            self._sample()
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.join()
        self._sample()
        return self.peak_kb * 1024


class _Timings:
    """θ1 pass, training epoch and data-path time, gathered by wrapping hooks."""

    def __init__(self) -> None:
        self.theta1_s = 0.0
        self.epoch_start: float | None = None
        self.last_step = 0.0
        self.data_s = 0.0
        self.steps = 0
        self.in_epoch = False
        self.cache: dict[str, Any] = {}

    def install(self) -> None:
        from torch.utils.data import dataloader

        from gradfeat_plugin.protocols import _cache
        from gradfeat_plugin.protocols._base import ProtocolClassifier

        timings = self
        boundary, close = _cache.FrozenOutputs.boundary, _cache.FrozenOutputs.close

        def timed_boundary(frozen: Any, dataset: Any) -> Any:
            start = time.perf_counter()
            stored = boundary(frozen, dataset)
            timings.theta1_s += time.perf_counter() - start
            return stored

        def recording_close(frozen: Any) -> None:
            timings.cache = {"mode": frozen.mode, "bytes": frozen.stored_bytes}
            close(frozen)

        _cache.FrozenOutputs.boundary = timed_boundary  # type: ignore[method-assign]
        _cache.FrozenOutputs.close = recording_close  # type: ignore[method-assign]

        epoch_start = ProtocolClassifier.on_train_epoch_start
        batch_end = ProtocolClassifier.on_train_batch_end
        validation_start = ProtocolClassifier.on_validation_start

        def on_train_epoch_start(module: Any) -> None:
            epoch_start(module)
            # Only the last epoch counts (the linear probe trains first).
            timings.epoch_start = timings.last_step = time.perf_counter()
            timings.data_s, timings.steps, timings.in_epoch = 0.0, 0, True

        def on_train_batch_end(module: Any, *args: Any) -> None:
            batch_end(module, *args)
            timings.last_step = time.perf_counter()
            timings.steps += 1

        def on_validation_start(module: Any) -> None:
            timings.in_epoch = False
            validation_start(module)

        ProtocolClassifier.on_train_epoch_start = on_train_epoch_start  # type: ignore
        ProtocolClassifier.on_train_batch_end = on_train_batch_end  # type: ignore
        ProtocolClassifier.on_validation_start = on_validation_start  # type: ignore

        next_batch = dataloader._BaseDataLoaderIter.__next__

        def timed_next(iterator: Any) -> Any:
            if not timings.in_epoch:
                return next_batch(iterator)
            start = time.perf_counter()
            try:
                return next_batch(iterator)
            finally:
                timings.data_s += time.perf_counter() - start

        dataloader._BaseDataLoaderIter.__next__ = timed_next  # type: ignore

    @property
    def epoch_s(self) -> float:
        return 0.0 if self.epoch_start is None else self.last_step - self.epoch_start


def child(args: argparse.Namespace) -> None:
    """One run; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    sampler = _AnonPeak()
    sampler.start()
    from gradfeat_plugin.config import get_cfg
    from gradfeat_plugin.evaluate import load_inputs
    from gradfeat_plugin.protocols import run_protocols

    timings = _Timings()
    timings.install()
    cfg = get_cfg()
    cfg.MODEL.SPEC, cfg.MODEL.WEIGHTS = "timm:resnet18", "random"
    cfg.MODEL.INPUT_SIZE = args.size
    cfg.MODEL.SPLIT = list(SPLIT)
    cfg.DATA.DATASET = f"imagefolder:{args.folder}"
    cfg.DATA.CACHE, cfg.DATA.CACHE_DTYPE = args.policy, args.dtype
    cfg.DATA.CACHE_DIR = args.cache_dir
    cfg.DATA.NUM_WORKERS = args.workers
    # Memory is measured against N training images: none is held out for choices.
    cfg.DATA.VAL_FRACTION = 0.0
    cfg.TRAIN.EPOCHS, cfg.TRAIN.BATCH_SIZE = 1, args.batch_size
    if args.cache_batch_size:
        cfg.TRAIN.CACHE_BATCH_SIZE = args.cache_batch_size
    cfg.TRAINER.ACCELERATOR = args.accelerator
    torch.manual_seed(0)  # the same random weights in every run
    backbone, data = load_inputs(cfg)
    start_anon = _status_kb("RssAnon") * 1024
    start = time.perf_counter()
    (result,) = run_protocols(["gradfeat"], backbone, data, cfg, progress=False)
    wall = time.perf_counter() - start
    anon = sampler.stop()
    print(json.dumps({
        "n": len(data.train),
        "policy": args.policy,
        "chosen": timings.cache.get("mode") or "off",
        "cache_bytes": timings.cache.get("bytes", 0),
        "peak_rss_bytes": _status_kb("VmHWM") * 1024,
        "peak_anon_bytes": anon,
        "peak_tree_pss_anon_bytes": sampler.peak_tree_kb * 1024,
        "start_anon_bytes": start_anon,
        "theta1_s": timings.theta1_s,
        "epoch_s": timings.epoch_s,
        "data_s": timings.data_s,
        "data_share": timings.data_s / timings.epoch_s if timings.epoch_s else None,
        "steps": timings.steps,
        "wall_s": wall,
        "val_top1": result.value,
        "val_loss": result.extra.get("val_loss"),
    }))


# -- the parent: every size and policy, then the table ----------------------------

def _run_child(args: argparse.Namespace, folder: Path, policy: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", "--folder", str(folder), "--policy", policy,
        "--size", str(args.size), "--dtype", args.dtype, "--threads", str(args.threads),
        "--workers", str(args.workers), "--batch-size", str(args.batch_size),
        "--cache-batch-size", str(args.cache_batch_size),
        "--accelerator", args.accelerator, "--cache-dir", args.cache_dir,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"error: the {policy} run on {folder} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| images | policy | cache MB | peak RSS MB | peak RssAnon MB "
        "| peak Pss_Anon (tree) MB | RssAnon at start MB | θ1 pass s | epoch s "
        "| data path |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        policy = r["policy"] if r["policy"] == r["chosen"] else f"{r['policy']}→{r['chosen']}"
        share = "" if r["data_share"] is None else f"{100 * r['data_share']:.1f} %"
        lines.append(
            f"| {r['n']} | {policy} | {r['cache_bytes'] / 2**20:.1f} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['peak_anon_bytes'] / 2**20:.0f} "
            f"| {r['peak_tree_pss_anon_bytes'] / 2**20:.0f} "
            f"| {r['start_anon_bytes'] / 2**20:.0f} "
            f"| {r['theta1_s']:.1f} | {r['epoch_s']:.1f} | {share} |"
        )
    return "\n".join(lines)


def _goals(rows: list[dict[str, Any]], n: int) -> list[str]:
    by = {(r["n"], r["policy"]): r for r in rows}
    notes = []
    small, large = by.get((n, "disk")), by.get((4 * n, "disk"))
    if small and large:
        growth = large["peak_anon_bytes"] / small["peak_anon_bytes"] - 1
        cache = large["cache_bytes"] / max(1, small["cache_bytes"])
        run_growth = [r["peak_anon_bytes"] - r["start_anon_bytes"] for r in (small, large)]
        tree = large["peak_tree_pss_anon_bytes"] / small["peak_tree_pss_anon_bytes"] - 1
        notes.append(
            f"disk: peak Pss_Anon of the process tree grows {100 * tree:+.1f} % from {n} "
            f"to {4 * n} images (goal ≤ +5 %): {'met' if tree <= 0.05 else 'not met'}"
        )
        notes.append(
            f"disk: peak RssAnon grows {100 * growth:+.1f} % from {n} to {4 * n} images "
            f"while the cache grows {cache:.2f}× (goal ≤ +10 %): "
            f"{'met' if growth <= 0.10 else 'not met'}; above the RssAnon at the start "
            f"of the run: {run_growth[0] / 2**20:.0f} MB, then {run_growth[1] / 2**20:.0f} MB"
        )
    for r in rows:
        if r["chosen"] in ("memory", "disk") and r["data_share"] is not None:
            notes.append(
                f"{r['policy']} at {r['n']}: data path {100 * r['data_share']:.1f} % of the "
                f"epoch (goal ≤ 5 %): {'met' if r['data_share'] <= 0.05 else 'not met'}"
            )
    return notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="training images of the small set")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--policies", nargs="+", default=["memory", "disk", "off"],
                        choices=POLICIES)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-batch-size", type=int, default=0,
                        help="TRAIN.CACHE_BATCH_SIZE, images per batch of the θ1 pass "
                        "(0: the config's default)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--workers", type=int, default=-1, help="DATA.NUM_WORKERS")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--root", default="", help="where the image sets are built "
                        "(kept); default a temporary folder")
    parser.add_argument("--cache-dir", default="", help="DATA.CACHE_DIR")
    parser.add_argument("--json", default="", help="also write the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="memory", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="gradfeat-scale-") as scratch:
        rows = run_all(args, Path(args.root or scratch), (args.n, 4 * args.n))
    print(_table(rows))
    for note in _goals(rows, args.n):
        print(note)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def run_all(args: argparse.Namespace, root: Path, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Build an image set per size under ``root`` and run every policy on each."""
    rows = []
    for n in sizes:
        folder = build_folder(
            root / f"n{n}_{args.size}px", n, max(args.classes, n // 10),
            args.size, args.classes,
        )
        for policy in args.policies:
            rows.append(_run_child(args, folder, policy))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
