"""Remake the zoo's shipped weights and their manifest, or check them.

    python benchmarks/make_zoo.py                      # every zoo model
    python benchmarks/make_zoo.py rotation_mnist5k     # one
    python benchmarks/make_zoo.py --check rotation_mnist5k
    python benchmarks/make_zoo.py --manifest-only      # from the files present; prints the README table

Each model is pretrained by its zoo recipe (``gradfeat_plugin.zoo.ZOO``) with
``benchmarks/pretrain.py``'s code path and saved into the package
(``gradfeat_plugin/zoo/weights``) with its metadata, including the held-out
scores of the pretext task beside a random encoder's. ``manifest.json`` records
the command that remakes each file, its seed, its SHA-256 and the recipe digest.
``--check`` remakes into a temporary folder and compares digests and scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from gradfeat_plugin.cli import ArgumentParser, main_guard, show_progress
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.zoo import ZOO, list_zoo_models, metadata_path, pretrain
from gradfeat_plugin.zoo.cache import atomic_write_bytes
from gradfeat_plugin.zoo.registry import (
    MANIFEST,
    file_sha256,
    read_manifest,
    recipe_digest,
    shipped_weights_dir,
)


def command(name: str) -> str:
    """The ``benchmarks/pretrain.py`` command that makes ``name``'s weights."""
    e = ZOO[name]
    return (
        f"python benchmarks/pretrain.py --method {e.method} --dataset {e.dataset} "
        f"--arch {e.arch} --epochs {e.epochs} --seed {e.seed} "
        f"--out gradfeat_plugin/zoo/weights/{name}.pth {' '.join(e.options)}"
    ).rstrip()


def make(name: str, folder: str, progress: bool) -> None:
    """Pretrain ``name`` into ``folder`` (weights and metadata)."""
    e = ZOO[name]
    path = os.path.join(folder, f"{name}.pth")
    pretrain(
        e.method, e.dataset, e.arch, e.epochs, path,
        seed=e.seed, cfg=e.config(), progress=progress,
    )


def manifest_entry(name: str, folder: str) -> dict:
    """``name``'s manifest entry, from its weights and metadata in ``folder``."""
    path = os.path.join(folder, f"{name}.pth")
    with open(metadata_path(path)) as f:
        meta = json.load(f)
    e = ZOO[name]
    pretrain_cfg = json.loads(json.dumps(e.config().PRETRAIN))
    made = (meta["recipe"], meta["arch"], meta["epochs"], meta["pretrain_cfg"])
    if made != (e.method, e.arch, e.epochs, pretrain_cfg):
        raise GradfeatError(f"{path} was not made by zoo:{name}'s recipe; remake it")
    return {
        "file": f"{name}.pth",
        "sha256": file_sha256(path),
        "recipe_digest": recipe_digest(name),
        "command": command(name),
        "options": list(e.options),
        "seed": meta["seed"],
        "epochs": meta["epochs"],
        "held_out": meta["held_out"],
        "final_pretext_loss": meta["final_pretext_loss"],
        "wall_time_s": meta["wall_time_s"],
        "torch": meta["torch"],
    }


def write_manifest(folder: str) -> dict:
    """Rebuild ``manifest.json`` from every zoo model's files in ``folder``."""
    manifest = {
        name: manifest_entry(name, folder)
        for name in list_zoo_models()
        if os.path.exists(os.path.join(folder, f"{name}.pth"))
    }
    atomic_write_bytes(
        os.path.join(folder, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode()
    )
    return manifest


RECIPE_NAMES = {
    "rotation": "rotation prediction (Gidaris et al. 2018)",
    "bigan": "BiGAN/ALI, encoder kept",
    "supervised": "supervised",
    "simclr": "SimCLR (lightly's loss, head and transforms)",
}
PRETEXT_SCORES = {"rotation_top1": "rotation", "supervised_top1": "top-1"}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_rows(manifest: dict) -> str:
    """The README's zoo table rows, from the manifest's held-out scores."""
    rows = []
    for name, entry in manifest.items():
        e = ZOO[name]
        held_out = entry["held_out"]
        ours, random = held_out.get("pretrained", {}), held_out.get("random_encoder", {})
        pretext = [f"{label} {_percent(ours[k])} %" for k, label in PRETEXT_SCORES.items() if k in ours]
        default = " (default)" if name == "rotation_mnist5k" else ""
        rows.append(
            f"| `{name}`{default} | {RECIPE_NAMES.get(e.method, e.method)} | {e.dataset} "
            f"| `{e.arch}` | {e.epochs} | {', '.join(pretext) or '–'} "
            f"| {_percent(ours['probe_top1'])} / {_percent(ours['knn_top1'])} "
            f"| {_percent(random['probe_top1'])} / {_percent(random['knn_top1'])} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="zoo models (default: all)")
    p.add_argument("--check", action="store_true", help="remake and compare, write nothing")
    p.add_argument(
        "--manifest-only",
        action="store_true",
        help="rebuild manifest.json from the weights and metadata present",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = args.names or list_zoo_models()
    unknown = sorted(set(names) - set(ZOO))
    if unknown:
        raise GradfeatError(f"unknown zoo model(s) {unknown}; choose from {list_zoo_models()}")
    if args.check:
        manifest = read_manifest()
        mismatched = []
        with tempfile.TemporaryDirectory() as scratch:
            for name in names:
                make(name, scratch, show_progress(args.no_progress))
                made = manifest_entry(name, scratch)
                shipped = manifest.get(name, {})
                same = made["sha256"] == shipped.get("sha256")
                print(
                    f"{name}: {'identical' if same else 'DIFFERENT'} weights; held-out "
                    f"{json.dumps(made['held_out'])} (shipped "
                    f"{json.dumps(shipped.get('held_out'))})"
                )
                mismatched += [] if same else [name]
        return 1 if mismatched else 0
    folder = shipped_weights_dir()
    if args.manifest_only:
        print(markdown_rows(write_manifest(folder)))
        return 0
    for name in names:
        make(name, folder, show_progress(args.no_progress))
        entry = write_manifest(folder)[name]
        print(f"{name}: {entry['sha256'][:12]} {json.dumps(entry['held_out'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
