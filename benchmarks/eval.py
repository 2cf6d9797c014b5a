"""Score a pretrained backbone with gradfeat and its baselines; store and show the results.

    python benchmarks/eval.py --protocol all                     # embedded default
    python benchmarks/eval.py --protocol linear gradfeat knn --model timm:resnet18 \
        --weights model.ckpt --weights-key student_backbone --input-size 32

User errors (unknown names, missing files, bad checkpoints or configs) print one
``error:`` line and exit with status 2; nothing is written. Each protocol's row is
stored as it finishes; a protocol that diverged or failed is stored as such, an
``error:`` line names it and the exit status is 1. Ctrl-C keeps the finished
protocols and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from gradfeat_plugin.cli import (
    ArgumentParser,
    main_guard,
    parse_model_kwargs,
    parse_normalization,
    show_info_lines,
    show_progress,
)
from gradfeat_plugin.config import dataset_config, get_cfg, load_config
from gradfeat_plugin.evaluate import evaluate
from gradfeat_plugin.results import ResultsStore, default_results_path, leaderboard_table, render
from gradfeat_plugin.results.setting import setting_of_config

PROTOCOL_CHOICES = ["linear", "grad", "gradfeat", "finetune", "knn", "all"]

# Command-line flags and the config keys they set.
FLAG_KEYS = {
    "model": "MODEL.SPEC",
    "weights": "MODEL.WEIGHTS",
    "allow_partial_weights": "MODEL.ALLOW_PARTIAL_WEIGHTS",
    "weights_key": "MODEL.WEIGHTS_KEY",
    "model_kwargs": "MODEL.KWARGS",
    "mean": "MODEL.MEAN",
    "std": "MODEL.STD",
    "input_size": "MODEL.INPUT_SIZE",
    "split": "MODEL.SPLIT",
    "dataset": "DATA.DATASET",
    "data_dir": "DATA.DATA_DIR",
    "label_fraction": "DATA.LABEL_FRACTION",
    "val_fraction": "DATA.VAL_FRACTION",
    "lr_sweep": "TRAIN.LR_SWEEP",
    "epochs": "TRAIN.EPOCHS",
    "batch_size": "TRAIN.BATCH_SIZE",
    "seed": "TRAIN.SEED",
    "devices": "TRAINER.DEVICES",
    "num_nodes": "TRAINER.NUM_NODES",
    "accelerator": "TRAINER.ACCELERATOR",
    "precision": "TRAINER.PRECISION",
    "strategy": "TRAINER.STRATEGY",
    "results": "RESULTS.PATH",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", nargs="+", default=["all"], metavar="PROTOCOL",
                   help=f"one or more of {', '.join(PROTOCOL_CHOICES)}")
    p.add_argument("--model", help="timm:NAME, torchvision:NAME, zoo:NAME or an entry point")
    p.add_argument("--model-kwargs", nargs="+", metavar="KEY=VALUE",
                   help="keywords of the model's constructor, e.g. img_size=32 "
                   "patch_size=8 or in_chans=1 (MODEL.KWARGS)")
    p.add_argument("--weights", help="pretrained, random, or a checkpoint PATH or URL")
    p.add_argument("--allow-partial-weights", action="store_const", const=True,
                   help="accept a checkpoint that leaves model tensors unloaded")
    p.add_argument("--weights-key", metavar="PREFIX",
                   help="the backbone's key prefix in the checkpoint, e.g. "
                   "student_backbone or model.backbone (default: the one that fits)")
    p.add_argument("--input-size", metavar="N|C,H,W",
                   help="image size fed to the backbone, e.g. 32 or 3,32,32 "
                   "(default: recorded with the checkpoint, else the model's)")
    p.add_argument("--mean", nargs="+", metavar="R G B|NAME",
                   help="per-channel normalisation mean, or imagenet, inception or "
                   "clip (default: the model's own)")
    p.add_argument("--std", nargs="+", metavar="R G B|NAME",
                   help="per-channel normalisation std, or a name as for --mean")
    p.add_argument("--split", nargs="+", help="θ2 module name(s); default: the family's top block")
    p.add_argument("--dataset", help="dataset name (see --list-datasets)")
    p.add_argument("--data-dir", help="root folder of downloaded datasets")
    p.add_argument("--label-fraction", type=float, help="fraction of training labels kept")
    p.add_argument("--val-fraction", type=float,
                   help="fraction of the training split held out for every choice "
                   "(default 0.1; 0 chooses on the test split)")
    p.add_argument("--lr-sweep", type=float, nargs="+", metavar="LR",
                   help="learning rates each trained protocol runs with; the best on "
                   "the validation split is reported")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--results", help="SQLite results store (default: $GRADFEAT_RESULTS "
                   "or ./gradfeat_results.db)")
    p.add_argument("--devices", type=int)
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--accelerator", help="cpu, gpu or auto")
    p.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed, ...")
    p.add_argument("--strategy", help="auto, ddp, ddp_spawn, ...")
    p.add_argument("--config", help="YAML config (a path, or a name in configs/)")
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars (shown only when stderr is a terminal)")
    p.add_argument("--list-models", nargs="?", const="*", metavar="PATTERN")
    p.add_argument("--list-protocols", action="store_true")
    p.add_argument("--list-datasets", action="store_true")
    p.add_argument("--list-splits", metavar="MODEL",
                   help="print MODEL's θ2 candidates with parameter counts, default marked")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    # KEY VALUE overrides right after a list (--protocol linear TRAIN.LR 0.1) are
    # overrides, not list items.
    for flag in ("protocol", "model_kwargs", "mean", "std"):
        items = getattr(args, flag)
        keys = (i for i, item in enumerate(items or []) if i and _is_key(item))
        end = next(keys, None)
        if end is not None:
            args.opts = items[end:] + args.opts
            setattr(args, flag, items[:end])
    for name in args.protocol:
        if name not in PROTOCOL_CHOICES:
            p.error(f"argument --protocol: invalid choice: {name!r} (choose from "
                    f"{', '.join(PROTOCOL_CHOICES)})")
    if args.model_kwargs:
        args.model_kwargs = parse_model_kwargs(args.model_kwargs)
    for flag in ("mean", "std"):
        if getattr(args, flag):
            setattr(args, flag, parse_normalization(getattr(args, flag), f"--{flag}"))
    return args


def _is_key(item: str) -> bool:
    """Whether a list item is a config key (``TRAIN.LR``) that starts the overrides."""
    return "=" not in item and item.split(".")[0].isupper()


def split_table(spec: str, model_kwargs: dict | None = None) -> str:
    """The θ2 candidates of a model spec (its structure: random weights suffice)."""
    from gradfeat_plugin import create_backbone
    from gradfeat_plugin.linearize import split_candidates

    backbone = create_backbone(spec, weights="random", **(model_kwargs or {}))
    default = set(backbone.split)
    lines = [f"{'module':<48}{'params':>14}{'share %':>9}  kind"]
    candidates = split_candidates(backbone.model)
    for c in candidates:
        kind = "block" if c.block else "layer/stage"
        mark = "  (default)" if c.name in default else ""
        lines.append(f"{c.name:<48}{c.num_params:>14,}{100 * c.share:>9.2f}  {kind}{mark}")
    missing = default - {c.name for c in candidates}
    for name in sorted(missing):
        lines.append(f"{name:<48}{'':>14}{'':>9}  (default)")
    lines.append(f"default θ2: {' '.join(backbone.split)}; pick others with --split NAME ...")
    return "\n".join(lines)


def run_summary(results_path: str, run_id: str) -> str:
    """The leaderboard rows a run's results count in, as markdown: every stored
    seed of its setting (model, weights, θ2, dataset and config but the seed)."""
    store = ResultsStore(results_path, create=False)
    mine = store.records(run_id=run_id)
    keys = {_setting_key(r) for r in mine}
    stored = store.records(dataset=mine[0]["dataset"])
    same = [r for r in stored if _setting_key(r) in keys]
    return render(leaderboard_table(same), "md")


def _setting_key(record: dict) -> tuple:
    fields = tuple(record[name] for name in ("model", "weights", "split", "dataset"))
    return (*fields, setting_of_config(record.get("config")))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_splits:
        print(split_table(args.list_splits, args.model_kwargs))
        return 0
    if args.list_models or args.list_protocols or args.list_datasets:
        from gradfeat_plugin import list_backbones, list_datasets, list_protocols

        if args.list_models:
            print("\n".join(list_backbones(args.list_models)))
        if args.list_protocols:
            print("\n".join(list_protocols()))
        if args.list_datasets:
            print("\n".join(list_datasets()))
        return 0
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    # Without --config, the dataset's shipped defaults apply (configs/datasets/).
    config_file = args.config or dataset_config(args.dataset or get_cfg().DATA.DATASET)
    cfg = load_config(config_file, args.opts, overrides)
    results_path = cfg.RESULTS.PATH or default_results_path()
    show_info_lines(not args.no_progress)
    # Progress and Lightning's own output go to stderr: stdout holds the summary.
    with contextlib.redirect_stdout(sys.stderr):
        run = evaluate(cfg, args.protocol, results_path,
                       progress=show_progress(args.no_progress))
    if run.run_id is None:
        return 0
    print(f"run {run.run_id}: {len(run.records)} results of {cfg.MODEL.SPEC} on "
          f"{cfg.DATA.DATASET} written to {results_path} (config: {run.config_path})\n")
    print(run_summary(results_path, run.run_id))
    if run.unfinished:
        finished = len(run.results) - len(run.unfinished)
        what = "; ".join(f"{r.protocol} {r.status} ({r.reason})" for r in run.unfinished)
        print(f"error: {what}; the {finished} finished protocol(s) were stored",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
