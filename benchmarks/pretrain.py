"""Pretrain a backbone with a self-supervised, generative or supervised recipe.

    python benchmarks/pretrain.py --method rotation --dataset mnist5k \
        --arch resnet_small --epochs 2 --out rotation_mnist5k.pth

Saves the backbone's plain ``state_dict`` (``torch.load(weights_only=True)``) to
``--out`` and its metadata next to it (``.json``). User errors (unknown names,
missing data) print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from gradfeat_plugin.cli import ArgumentParser, main_guard, show_progress
from gradfeat_plugin.config import load_config
from gradfeat_plugin.zoo import list_archs, list_methods, metadata_path, pretrain


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=list_methods())
    p.add_argument(
        "--dataset", required=True, help="dataset name, e.g. mnist5k, digits"
    )
    p.add_argument("--arch", required=True, help=f"one of {', '.join(list_archs())}")
    p.add_argument("--epochs", required=True, type=int)
    p.add_argument(
        "--out", required=True, help="checkpoint path (metadata: same name, .json)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--data-dir", default="", help="root folder of non-embedded datasets"
    )
    p.add_argument("--batch-size", type=int, help="sets PRETRAIN.BATCH_SIZE")
    p.add_argument("--config", help="YAML config (a path, or a name in configs/)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, {"PRETRAIN.BATCH_SIZE": args.batch_size})
    meta = pretrain(
        args.method,
        args.dataset,
        args.arch,
        args.epochs,
        args.out,
        seed=args.seed,
        data_dir=args.data_dir,
        cfg=cfg,
        progress=show_progress(args.no_progress),
    )
    print(
        f"{args.method} {args.arch} on {args.dataset}: final pretext loss "
        f"{meta['final_pretext_loss']:.4f} after {args.epochs} epochs, "
        f"{meta['wall_time_s']:.1f} s\nsaved {args.out} and {metadata_path(args.out)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
