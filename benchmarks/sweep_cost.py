"""Cost of a learning-rate sweep against a single run, for ``linear`` and ``gradfeat``.

Both sides read θ1's outputs from one store computed before any timing (the cached
setting), so the ratio is that of training and selection alone: the sweep's heads
(``linear``) or tangent sets (``gradfeat``) trained in one pass, validated, and the
chosen one scored on the test split, against one setting doing the same. ``gradfeat``
includes the linear probe it expands around, swept too on the sweep's side (ω̄ is
chosen on the validation split). Runs are interleaved (single, sweep, single, ...)
in one process and the median of the pairs' ratios is reported.

    python benchmarks/sweep_cost.py --repeats 3
    python benchmarks/sweep_cost.py --default-job --repeats 2

``--default-job`` times the README's default job (``zoo:rotation_mnist5k`` on
``mnist5k`` with its dataset config) instead of a BiGAN encoder on ``digits``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable

import torch
from fvcore.common.config import CfgNode
from protocol_cost import CLOCKS, benchmark_job  # this folder's cost benchmark

from gradfeat_plugin.config.protocol_kwargs import run_settings
from gradfeat_plugin.protocols.run import _ProtocolRun


def _timed(
    name: str, backbone: object, data, cfg: CfgNode, shared: _ProtocolRun,
    clock: Callable[[], float],
) -> tuple[float, float]:
    """Seconds to train, select and test ``name`` (and the probe it needs) on the
    θ1 outputs ``shared`` holds; and the reported value."""
    run = _ProtocolRun(backbone, data, run_settings(cfg, [name]), progress=False)
    run.planned = [name]
    run.frozen, run.statistics, run.cached = shared.frozen, shared.statistics, {}
    start = clock()
    result = run.run(name)
    seconds = clock() - start
    if result.status != "ok":
        raise SystemExit(f"error: {name} {result.status}: {result.reason}")
    return seconds, result.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--width", type=int, default=32, help="BiGAN encoder width")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="the process's CPU time (steadier on a shared CPU; the "
                        "default, with one thread) or wall time")
    parser.add_argument("--default-job", action="store_true",
                        help="time eval.py's default job (ignores --width, --dataset, "
                        "--epochs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]

    backbone, data, cfg = benchmark_job(args, val_fraction=0.1)
    cfg.TRAINER.ACCELERATOR = "cpu"
    cfg.DATA.CACHE = "memory"
    sweep = cfg.clone()
    sweep.TRAIN.LR_SWEEP = list(args.lrs)

    # θ1's outputs, the pooled features and their statistics, computed once.
    shared = _ProtocolRun(backbone, data, run_settings(cfg, ["gradfeat"]), progress=False)
    shared.planned = ["gradfeat"]
    device = torch.device("cpu")
    frozen = shared._frozen_outputs(device)
    for dataset in (data.train, data.val, data.test):
        frozen.get("boundary", dataset)
        frozen.get("features", dataset)
    shared.feature_statistics(device)

    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"linear": [], "gradfeat": []}
    values: dict[str, float] = {}
    for name in ratios:
        _timed(name, backbone, data, cfg, shared, clock)  # warm-up
    for _ in range(args.repeats):
        for name in ratios:
            single, values[name] = _timed(name, backbone, data, cfg, shared, clock)
            swept, values[f"{name} sweep"] = _timed(name, backbone, data, sweep, shared, clock)
            times.setdefault(name, []).append(single)
            times.setdefault(f"{name} sweep", []).append(swept)
            ratios[name].append(swept / single)
    shared.close()
    report = {
        "model": cfg.MODEL.SPEC if args.default_job else f"bigan_encoder width {args.width}",
        "dataset": args.dataset,
        "epochs": args.epochs,
        "lrs": args.lrs,
        "single_lr": cfg.TRAIN.LR,
        "threads": args.threads,
        "clock": args.clock,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "ratio_sweep_vs_single": {
            k: round(statistics.median(v), 3) for k, v in ratios.items()
        },
        "ratio_range": {k: [round(min(v), 3), round(max(v), 3)] for k, v in ratios.items()},
        "values": {k: round(v, 4) for k, v in values.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
