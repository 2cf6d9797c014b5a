"""One evaluation run: backbone + dataset + protocols -> rows in the results store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from fvcore.common.config import CfgNode

from .backbones import Backbone, create_backbone
from .config import validate_config
from .data import DatasetSplits, get_dataset, list_datasets
from .errors import GradfeatError
from .linearize import resolve_split
from .protocols import ProtocolResult, expand_protocols, run_protocols
from .results import ResultsStore, config_hash, count_flops, package_versions
from .results.store import verify_store


@dataclass
class EvalRun:
    """What one run produced.

    Attributes:
        run_id: The results-store id (``None`` on non-zero ranks, which write nothing).
        results: One :class:`ProtocolResult` per protocol.
        records: The rows written to the store.
        config_path: Where the merged config was saved.
    """

    run_id: str | None
    results: list[ProtocolResult]
    records: list[dict[str, Any]] = field(default_factory=list)
    config_path: str | None = None


def _check_results_path(path: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise GradfeatError(f"results folder {parent} does not exist")
    # Read-only: a foreign, corrupt or read-only file is refused before any work.
    verify_store(path, writable=True)


def _check_knn_k(cfg: CfgNode, names: list[str], data: DatasetSplits) -> None:
    if "knn" in names and cfg.KNN.K > len(data.train):
        raise GradfeatError(
            f"bad config: KNN.K is {cfg.KNN.K} but the training set has only "
            f"{len(data.train)} images; pick a smaller KNN.K"
        )


def _check_dataset_name(name: str) -> None:
    # Checked before the backbone is built: a zoo backbone may pretrain first.
    if name not in list_datasets() and not (name.startswith("imagefolder:") and name[12:]):
        raise GradfeatError(f"unknown dataset {name!r}; choose one of {list_datasets()}")


def load_inputs(cfg: CfgNode) -> tuple[Backbone, DatasetSplits]:
    """The backbone (with the configured θ2) and the dataset a config names."""
    _check_dataset_name(cfg.DATA.DATASET)
    backbone = create_backbone(
        cfg.MODEL.SPEC, weights=cfg.MODEL.WEIGHTS,
        allow_partial_weights=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS,
    )
    if cfg.MODEL.SPLIT:
        try:
            backbone.split = resolve_split(backbone.model, list(cfg.MODEL.SPLIT))
        except ValueError as exc:
            raise GradfeatError(str(exc)) from None
    data = get_dataset(
        cfg.DATA.DATASET,
        input_size=tuple(backbone.input_size),
        mean=tuple(backbone.mean),
        std=tuple(backbone.std),
        data_dir=cfg.DATA.DATA_DIR,
        label_fraction=cfg.DATA.LABEL_FRACTION,
        seed=cfg.TRAIN.SEED,
        augment=cfg.DATA.AUGMENT,
    )
    return backbone, data


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

    Everything that can be checked is checked before training starts, and rows are
    written in one transaction after every protocol finished: a failed or
    interrupted run leaves nothing behind.

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
    backbone, data = load_inputs(cfg)
    _check_knn_k(cfg, names, data)
    pl.seed_everything(cfg.TRAIN.SEED, verbose=False)
    results = run_protocols(names, backbone, data, cfg, progress=progress)
    if not results:
        return EvalRun(run_id=None, results=[])
    flops, params = count_flops(backbone.model, tuple(backbone.input_size))
    common = {
        "model": backbone.spec,
        "weights": _weights_label(backbone.weights, cfg, backbone.partial),
        "split": ",".join(backbone.split),
        "dataset": data.name,
        "flops": flops,
        "params": params,
        "versions": package_versions(),
        "config_hash": config_hash(cfg.dump()),
        "config": cfg.dump(),
    }
    records = []
    for result in results:
        row = asdict(result)
        row.update(common)
        records.append(row)
    store = ResultsStore(results_path)
    run_id = store.add_run(records)
    config_dir = Path(results_path).resolve().parent / "runs"
    config_dir.mkdir(exist_ok=True)
    config_path = config_dir / f"{run_id}.yaml"
    config_path.write_text(cfg.dump())
    return EvalRun(run_id, results, records, str(config_path))
