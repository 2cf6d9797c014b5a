"""Wall time of ``all`` (linear, grad, gradfeat, finetune) against ``finetune`` alone.

Both runs train the same epochs on the same data; ``all`` computes θ1's outputs
once and shares them, and ``finetune`` alone caches them too. Runs are interleaved
(all, finetune, all, finetune, ...) in one process and the median ratio of the
pairs is reported. A third column times ``finetune`` without the θ1 cache, the
conventional way of fine-tuning the top block. With ``--baseline`` a fourth times
``all`` the way it ran before the shared pass: grad and gradfeat trained one after
the other with the ``func`` JVP engine. With ``--flops`` one more, untimed run of
each counts its floating-point operations (``torch.utils.flop_counter``: every
convolution, matmul and their backward, the JVP's tangent convolutions included),
so that the time ratio can be read against the ratio of the work.

    python benchmarks/protocol_cost.py --width 32 --epochs 5 --repeats 3
    python benchmarks/protocol_cost.py --default-job --repeats 2 --flops

``--default-job`` times the README's default job instead: ``benchmarks/eval.py``'s
defaults (``zoo:rotation_mnist5k`` on ``mnist5k`` with its dataset config, 30 epochs),
built the way ``eval.py`` builds it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch
from fvcore.common.config import CfgNode
from torch.utils.flop_counter import FlopCounterMode

from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.config import dataset_config, get_cfg, load_config
from gradfeat_plugin.data import DatasetSplits, get_dataset
from gradfeat_plugin.evaluate import load_inputs
from gradfeat_plugin.protocols import run as protocol_run
from gradfeat_plugin.protocols import run_protocols

ALL_TRAINED = ["linear", "grad", "gradfeat", "finetune"]
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class _Backbone:
    def __init__(self, model: torch.nn.Module, split: list[str]) -> None:
        self.model, self.split = model, split


def _timed(
    names: list[str], backbone: _Backbone, data: DatasetSplits, cfg: CfgNode,
    clock: Callable[[], float], joint: bool = True,
) -> tuple[float, dict[str, float]]:
    joint_protocols = protocol_run.JOINT_PROTOCOLS
    protocol_run.JOINT_PROTOCOLS = joint_protocols if joint else ()
    try:
        start = clock()
        results = run_protocols(names, backbone, data, cfg, progress=False)
        seconds = clock() - start
    finally:
        protocol_run.JOINT_PROTOCOLS = joint_protocols
    return seconds, {r.protocol: round(r.value, 4) for r in results}


def counted_flops(
    names: list[str], backbone: _Backbone, data: DatasetSplits, cfg: CfgNode
) -> int:
    """Floating-point operations of one run of ``names`` (the θ1 pass included)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run_protocols(names, backbone, data, cfg, progress=False)
    return int(counter.get_total_flops())


def benchmark_job(
    args: argparse.Namespace, val_fraction: float = 0.0
) -> tuple[object, DatasetSplits, CfgNode]:
    """The backbone, data and config a cost benchmark times: ``eval.py``'s default
    job with ``args.default_job`` (``args`` then records its dataset and epochs),
    else a BiGAN encoder of ``args.width`` (θ2 = ``conv4``) on ``args.dataset``."""
    torch.manual_seed(0)
    if args.default_job:
        cfg = load_config(dataset_config(get_cfg().DATA.DATASET)).clone()
        cfg.defrost()
        backbone, data = load_inputs(cfg)
        args.dataset, args.width, args.epochs = cfg.DATA.DATASET, None, cfg.TRAIN.EPOCHS
        return backbone, data, cfg
    backbone = _Backbone(BiGANEncoder(width=args.width).eval(), ["conv4"])
    data = get_dataset(args.dataset, input_size=(3, 32, 32), val_fraction=val_fraction)
    cfg = get_cfg()
    cfg.TRAIN.EPOCHS = args.epochs
    return backbone, data, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32, help="BiGAN encoder width")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--finetune-optimizers", nargs="+", default=["adam", "sgd"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch")
    parser.add_argument("--baseline", action="store_true",
                        help="also time all as before: separate passes, func engine")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (steadier on a shared "
                        "CPU; use it with one thread)")
    parser.add_argument("--flops", action="store_true",
                        help="also count the FLOPs of all and finetune (untimed runs)")
    parser.add_argument("--default-job", action="store_true",
                        help="time eval.py's default job (ignores --width, --dataset, "
                        "--epochs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]

    backbone, data, cfg = benchmark_job(args)
    cfg.TRAINER.ACCELERATOR = args.accelerator
    cfg.FINETUNE.OPTIMIZERS = args.finetune_optimizers
    uncached = cfg.clone()
    uncached.TRAIN.CACHE_FEATURES = False
    before = cfg.clone()
    before.MODEL.ENGINE = "func"

    _timed(ALL_TRAINED, backbone, data, cfg, clock)  # warm-up: imports, allocator, JVP setup
    ratios, ratios_uncached = [], []
    times: dict[str, list[float]] = {"all": [], "finetune": [], "finetune_uncached": []}
    ratios_before: list[float] = []
    scores_before: dict[str, float] = {}
    for _ in range(args.repeats):
        t_all, scores = _timed(ALL_TRAINED, backbone, data, cfg, clock)
        t_ft, _ = _timed(["finetune"], backbone, data, cfg, clock)
        t_ft_uncached, _ = _timed(["finetune"], backbone, data, uncached, clock)
        times["all"].append(t_all)
        times["finetune"].append(t_ft)
        times["finetune_uncached"].append(t_ft_uncached)
        ratios.append(t_all / t_ft)
        ratios_uncached.append(t_all / t_ft_uncached)
        if args.baseline:
            t_before, scores_before = _timed(
                ALL_TRAINED, backbone, data, before, clock, joint=False
            )
            times.setdefault("all_before", []).append(t_before)
            ratios_before.append(t_before / t_ft)
    report = {
        "model": cfg.MODEL.SPEC if args.default_job else f"bigan_encoder width {args.width}",
        "dataset": args.dataset,
        "width": args.width,
        "epochs": args.epochs,
        "finetune_optimizers": args.finetune_optimizers,
        "threads": args.threads,
        "clock": args.clock,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "ratio_all_vs_finetune": round(statistics.median(ratios), 3),
        "ratio_all_vs_uncached_finetune": round(statistics.median(ratios_uncached), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "scores": scores,
    }
    if args.baseline:
        report["ratio_all_before_vs_finetune"] = round(statistics.median(ratios_before), 3)
        report["ratio_before_range"] = [round(min(ratios_before), 3), round(max(ratios_before), 3)]
        report["scores_before"] = scores_before
    if args.flops:
        flops_all = counted_flops(ALL_TRAINED, backbone, data, cfg)
        flops_ft = counted_flops(["finetune"], backbone, data, cfg)
        report["gflops"] = {"all": round(flops_all / 1e9, 1), "finetune": round(flops_ft / 1e9, 1)}
        report["flop_ratio_all_vs_finetune"] = round(flops_all / flops_ft, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
