"""One evaluation run: backbone + dataset + protocols -> rows in the results store."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from fvcore.common.config import CfgNode

from .backbones import Backbone, create_backbone
from .config import validate_config
from .data import DatasetSplits, get_dataset, list_datasets
from .errors import GradfeatError
from .config.protocol_kwargs import run_settings
from .linearize import linearize, resolve_split, split_warnings
from .protocols import ProtocolResult, expand_protocols, iter_protocols
from .protocols._cache import check_cache_directory
from .results import ResultsStore, config_hash, count_flops, package_versions
from .results.store import new_run_id, verify_store

log = logging.getLogger(__name__)


@dataclass
class EvalRun:
    """What one run produced.

    Attributes:
        run_id: The results-store id (``None`` on non-zero ranks, which write nothing).
        results: One :class:`ProtocolResult` per protocol, diverged ones included.
        records: The rows written to the store.
        config_path: Where the merged config was saved.
    """

    run_id: str | None
    results: list[ProtocolResult]
    records: list[dict[str, Any]] = field(default_factory=list)
    config_path: str | None = None

    @property
    def unfinished(self) -> list[ProtocolResult]:
        """The protocols that diverged or failed."""
        return [r for r in self.results if r.status != "ok"]


def _check_results_path(path: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise GradfeatError(f"results folder {parent} does not exist")
    # Read-only: a foreign, corrupt or read-only file is refused before any work.
    verify_store(path, writable=True)
    runs = parent / "runs"
    writable = runs.is_dir() and os.access(runs, os.W_OK | os.X_OK)
    if os.path.lexists(runs) and not writable:
        raise GradfeatError(
            f"{runs} (where run configs are saved next to the results) is not a "
            "writable folder; remove it or pass another --results"
        )


def _check_cache_dir(cfg: CfgNode) -> None:
    """The folder the θ1 pass may write its memory-mapped files in, checked before
    any work (``disk``, or ``auto`` which may choose it)."""
    cached = cfg.TRAIN.CACHE_FEATURES and not cfg.DATA.AUGMENT
    if cached and cfg.DATA.CACHE in ("auto", "disk"):
        check_cache_directory(cfg.DATA.CACHE_DIR)


def _check_knn_k(cfg: CfgNode, names: list[str], data: DatasetSplits) -> None:
    if "knn" in names and cfg.KNN.K > len(data.train):
        raise GradfeatError(
            f"bad config: KNN.K is {cfg.KNN.K} but the training set has only "
            f"{len(data.train)} images; pick a smaller KNN.K"
        )


def _check_linearization(cfg: CfgNode, backbone: Backbone) -> None:
    """Build the linearised backbone once before any training: its self-check (f
    unchanged, the JVP exact, w2 trainable) turns a model it cannot handle into an
    ``error:`` line instead of a number in the store."""
    linearize(
        backbone.model,
        backbone.split,
        fold_bn=cfg.MODEL.FOLD_BN,
        ntk=cfg.MODEL.NTK,
        engine=cfg.MODEL.ENGINE,
        input_size=backbone.input_size,
    )


def _check_dataset_name(name: str) -> None:
    # Checked before the backbone is built: a zoo backbone may pretrain first.
    if name not in list_datasets() and not (name.startswith("imagefolder:") and name[12:]):
        raise GradfeatError(f"unknown dataset {name!r}; choose one of {list_datasets()}")


def load_inputs(cfg: CfgNode) -> tuple[Backbone, DatasetSplits]:
    """The backbone (with the configured θ2) and the dataset a config names.

    The backbone is built after seeding with ``TRAIN.SEED``, so that random
    weights (``--weights random``) are the same network for the same seed.
    """
    _check_dataset_name(cfg.DATA.DATASET)
    pl.seed_everything(cfg.TRAIN.SEED, verbose=False)
    backbone = create_backbone(
        cfg.MODEL.SPEC,
        weights=cfg.MODEL.WEIGHTS,
        weights_key=cfg.MODEL.WEIGHTS_KEY,
        input_size=cfg.MODEL.INPUT_SIZE,
        allow_partial_weights=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS,
        mean=cfg.MODEL.MEAN,
        std=cfg.MODEL.STD,
        **dict(cfg.MODEL.KWARGS),
    )
    if cfg.MODEL.SPLIT:
        try:
            backbone.split = resolve_split(backbone.model, list(cfg.MODEL.SPLIT))
        except ValueError as exc:
            raise GradfeatError(str(exc)) from None
        for line in split_warnings(backbone.model, backbone.split):
            log.warning("warning: %s", line)
    data = get_dataset(
        cfg.DATA.DATASET,
        input_size=tuple(backbone.input_size),
        mean=tuple(backbone.mean),
        std=tuple(backbone.std),
        data_dir=cfg.DATA.DATA_DIR,
        label_fraction=cfg.DATA.LABEL_FRACTION,
        val_fraction=cfg.DATA.VAL_FRACTION,
        seed=cfg.TRAIN.SEED,
        augment=cfg.DATA.AUGMENT,
    )
    return backbone, data


def recorded_config(cfg: CfgNode, backbone: Backbone) -> CfgNode:
    """The config stored with a run's rows and saved next to them: ``cfg`` with what
    was resolved while building the backbone, so that runs that evaluate the same
    thing have the same setting (one leaderboard row) and rerunning the saved
    config repeats the run.

    ``MODEL.WEIGHTS_KEY`` is the prefix the checkpoint's tensors came from, given
    or found (empty without a checkpoint); ``MODEL.MEAN``/``MODEL.STD``, when set,
    are numbers (a name such as ``imagenet`` is replaced by its values).
    """
    recorded = cfg.clone()
    recorded.defrost()
    recorded.MODEL.WEIGHTS_KEY = backbone.weights_key
    if cfg.MODEL.MEAN is not None:
        recorded.MODEL.MEAN = list(backbone.mean)
    if cfg.MODEL.STD is not None:
        recorded.MODEL.STD = list(backbone.std)
    recorded.freeze()
    return recorded


def _weights_label(weights: str, cfg: CfgNode, partial: bool = False) -> str:
    """The weights (marked partial when tensors were left unloaded), plus the
    Table 1 ablation setting when one part is random."""
    if partial:
        weights = f"{weights} (partial)"
    settings = {"θ1": cfg.ABLATION.THETA1, "θ2": cfg.ABLATION.THETA2, "ω": cfg.ABLATION.PROBE}
    if all(value == "pretrained" for value in settings.values()):
        return weights
    return f"{weights}; " + " ".join(f"{k}={v}" for k, v in settings.items())


def evaluate(
    cfg: CfgNode, protocols: list[str], results_path: str, progress: bool = True
) -> EvalRun:
    """Run the protocols a config asks for and store one row per protocol.

    Everything that can be checked is checked before training starts. The merged
    config is saved (``runs/RUN_ID.yaml`` next to the store) before the first row,
    and each protocol's row is written in its own transaction as soon as the
    protocol finishes: a later failure or an interruption keeps the finished ones.
    A protocol that diverged or failed is stored with its status and reason and no
    value.

    Args:
        cfg: The frozen, merged config.
        protocols: Protocol names, ``all`` allowed.
        results_path: The SQLite results store.
        progress: Show progress bars.

    Returns:
        The :class:`EvalRun`.
    """
    validate_config(cfg)
    names = expand_protocols(protocols)
    _check_results_path(results_path)
    _check_cache_dir(cfg)
    backbone, data = load_inputs(cfg)
    _check_knn_k(cfg, names, data)
    _check_linearization(cfg, backbone)
    pl.seed_everything(cfg.TRAIN.SEED, verbose=False)
    flops, params = count_flops(backbone.model, tuple(backbone.input_size))
    recorded = recorded_config(cfg, backbone)
    common = {
        "model": backbone.spec,
        "weights": _weights_label(backbone.weights, cfg, backbone.partial),
        "split": ",".join(backbone.split),
        "dataset": data.name,
        "flops": flops,
        "params": params,
        "versions": package_versions(),
        "config_hash": config_hash(recorded.dump()),
        "config": recorded.dump(),
    }
    run = EvalRun(run_id=None, results=[])
    store: ResultsStore | None = None
    settings = run_settings(cfg, names)
    for result in iter_protocols(names, backbone, data, settings, progress=progress):
        if store is None:
            store = ResultsStore(results_path)
            run.run_id = new_run_id()
            run.config_path = _save_config(recorded, results_path, run.run_id)
        row = asdict(result)
        row.update(common)
        row["extra"] = {
            **row["extra"],
            "input_size": list(backbone.input_size),
            "num_classes": data.num_classes,
            "task": data.task,
        }
        try:
            store.add_run([row], run_id=run.run_id)
        except GradfeatError:
            if not run.records and run.config_path:
                _remove_config(run.config_path)  # a config without rows is half a run
            raise
        run.results.append(result)
        run.records.append(row)
    return run


def _save_config(cfg: CfgNode, results_path: str, run_id: str) -> str:
    """The run's merged config as ``runs/RUN_ID.yaml`` next to the store."""
    config_dir = Path(results_path).resolve().parent / "runs"
    config_path = config_dir / f"{run_id}.yaml"
    try:
        config_dir.mkdir(exist_ok=True)
        config_path.write_text(cfg.dump())
    except OSError as err:
        _remove_config(str(config_path))
        raise GradfeatError(
            f"cannot save the run's config in {config_dir}: {err.strerror}; free space "
            "or pass another --results"
        ) from None
    return str(config_path)


def _remove_config(config_path: str) -> None:
    """Remove a saved config, and ``runs/`` when that leaves it empty."""
    path = Path(config_path)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
