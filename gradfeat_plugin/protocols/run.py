"""Run protocols on one backbone and dataset: the orchestration the CLI calls."""

from __future__ import annotations

import contextlib
import logging
import resource
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from fvcore.common.config import CfgNode
from lightly.utils.benchmarking import KNNClassifier
from pytorch_lightning import LightningModule, Trainer, seed_everything
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import GradfeatError, ProtocolFailed, lightning_interrupts
from ..linearize import FeatureStandardization, linearize, resolve_split
from ._base import check_task
from ._cache import (
    ITERABLE_LEN_WARNING,
    CachedInputs,
    CachePolicy,
    EpochShuffle,
    FrozenOutputs,
    cached_loader,
    default_num_workers,
)
from ._registry import get_protocol_class
from .gradfeat import GradFeatProtocol
from .joint import JointLinearModels

#: What ``all`` runs, in order (``linear`` first: its head is ω̄ for the next two).
ALL_PROTOCOLS = ("linear", "grad", "gradfeat", "finetune", "knn")
PROBE_PROTOCOL = "linear"
#: Protocols trained in one shared pass when a run asks for all of them (cached).
JOINT_PROTOCOLS = ("grad", "gradfeat")


@dataclass
class ProtocolResult:
    """One protocol's score on one backbone and dataset.

    Attributes:
        protocol: Registry name (``linear``, ``gradfeat``, ...).
        metric: The metric's name (``val_top1``, ``val_map``, ``val_knn_top1``, ...).
        value: The metric after the last epoch (best over the optimisers that did
            not diverge); ``None`` unless ``status`` is ``ok``.
        epochs: Training epochs (0 for kNN).
        seed: The run's seed.
        wall_time_s: Wall time, including any θ1 pass or probe it had to compute.
            Protocols trained in one shared pass (``extra["trained_with"]``) split
            that pass's time evenly; ``extra["shared_wall_time_s"]`` is all of it.
        peak_memory_bytes: Peak CUDA memory of the protocol, or the process's peak
            resident memory on CPU.
        trainable_params: Number of trained scalars.
        extra: Other metrics, the optimiser chosen, per-optimiser values, θ2, and
            the reasons of optimisers that diverged.
        status: ``ok``, ``diverged`` (a non-finite training loss) or ``failed``
            (non-finite outputs, or a probe it needed did not finish).
        reason: Why, when ``status`` is not ``ok``.
    """

    protocol: str
    metric: str
    value: float | None
    epochs: int
    seed: int
    wall_time_s: float
    peak_memory_bytes: int
    trainable_params: int
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""


def expand_protocols(names: Sequence[str]) -> list[str]:
    """Resolve ``all`` and check every name; order kept, duplicates dropped."""
    expanded: list[str] = []
    for name in names:
        for item in ALL_PROTOCOLS if name == "all" else (name,):
            get_protocol_class(item)
            if item not in expanded:
                expanded.append(item)
    if not expanded:
        raise GradfeatError("no protocol given; use one of the registered names or all")
    return expanded


def metric_name(cls: type, task: str) -> str:
    """The metric a protocol class reports for a task (``val_top1``, ``val_knn_map``)."""
    kind = "map" if task == "multilabel" else "top1"
    return f"val_knn_{kind}" if issubclass(cls, KNNClassifier) else f"val_{kind}"


def build_trainer(cfg: CfgNode, progress: bool = True) -> Trainer:
    """A Lightning Trainer built from ``cfg.TRAINER`` and ``cfg.TRAIN``, quiet.

    Args:
        cfg: The run's config.
        progress: Show Lightning's progress bar.
    """
    epochs = cfg.TRAIN.EPOCHS
    return Trainer(
        max_epochs=epochs,
        accelerator=cfg.TRAINER.ACCELERATOR,
        devices=cfg.TRAINER.DEVICES,
        num_nodes=cfg.TRAINER.NUM_NODES,
        strategy=cfg.TRAINER.STRATEGY,
        precision=cfg.TRAINER.PRECISION,
        check_val_every_n_epoch=cfg.TRAIN.VAL_EVERY_N_EPOCHS or epochs,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Silence Lightning's advisory warnings, and its info lines unless ``progress``."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=ITERABLE_LEN_WARNING)
        if not progress:
            lightning_log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            lightning_log.setLevel(level)


def _scalar_metrics(trainer: Trainer) -> dict[str, float]:
    """The trainer's scalar metrics, named without Lightning's dataloader suffix."""
    return {
        key.split("/dataloader_idx_")[0]: float(value)
        for key, value in trainer.callback_metrics.items()
        if value.numel() == 1
    }


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _ProtocolRun:
    """Shared state of one ``run_protocols`` call: θ1's stored outputs and ω̄."""

    def __init__(
        self, backbone: Any, data: Any, cfg: CfgNode, progress: bool
    ) -> None:
        check_task(data.task)
        self.backbone, self.data, self.cfg = backbone, data, cfg
        self.progress = progress
        try:
            self.split = resolve_split(
                backbone.model, list(cfg.MODEL.SPLIT or backbone.split) or None
            )
        except ValueError as exc:
            raise GradfeatError(
                f"bad θ2 split: {exc}; pick module names of the model"
            ) from exc
        self.policy = CachePolicy.from_cfg(cfg)
        self.use_cache = self.policy.mode != "off" and not cfg.DATA.AUGMENT
        self.frozen: FrozenOutputs | None = None
        self.cached: dict[str, bool] = {}
        # Under DDP each process stores θ1's outputs of its own shard only.
        self.rank, self.world_size = 0, 1
        self._shards: dict[int, Dataset] = {}
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self.probe_failure: ProtocolResult | None = None
        self.statistics: tuple[torch.Tensor, torch.Tensor] | None = None
        self.is_global_zero = True
        #: The protocols this run will train (joint training looks ahead).
        self.planned: list[str] = []
        self.joint_results: dict[str, ProtocolResult] = {}

    def _shard_index(self, size: int) -> torch.Tensor:
        """This process's items, as ``DistributedSampler(shuffle=False)`` picks them:
        ``rank::world_size`` of the items, the first ones repeated to even shards."""
        total = -(-size // self.world_size) * self.world_size
        padded = torch.arange(total) % max(1, size)
        return padded[self.rank :: self.world_size]

    def _shard(self, dataset: Dataset) -> Dataset:
        """``dataset``, or under DDP this process's shard of it (the same object
        every time, so that its stored outputs are found again)."""
        if self.world_size == 1:
            return dataset
        if id(dataset) not in self._shards:
            index = self._shard_index(len(dataset))  # type: ignore[arg-type]
            self._shards[id(dataset)] = Subset(dataset, index.tolist())
        return self._shards[id(dataset)]

    def _stored(self, kind: str, dataset: Dataset, device: torch.device) -> CachedInputs:
        frozen = self._frozen_outputs(device)
        if kind == "boundary" or self.world_size == 1:
            return frozen.get(kind, self._shard(dataset))
        # Pooled features are small: computed for all items (the statistics need
        # them all), then sliced to the shard.
        features = frozen.features(dataset, direct=True)
        return features.subset(self._shard_index(len(features)))

    def _datasets(
        self, cls: type, cached: bool, device: torch.device
    ) -> tuple[Dataset, Dataset]:
        if not cached:
            return self.data.train, self.data.test
        return (
            self._stored(cls.cache, self.data.train, device),
            self._stored(cls.cache, self.data.test, device),
        )

    def _caches(self, cls: type, device: torch.device) -> bool:
        """Whether ``cls`` reads stored inputs: pooled features whenever caching is
        on; θ1's outputs unless the policy chose ``off``."""
        if not (self.use_cache and cls.can_cache(self.cfg)):
            return False
        datasets = [self._shard(self.data.train), self._shard(self.data.test)]
        mode = self._frozen_outputs(device).plan(datasets)
        return cls.cache == "features" or mode != "off"

    def _frozen_outputs(self, device: torch.device) -> FrozenOutputs:
        """The run's store of θ1 outputs and pooled features (built on first use)."""
        if self.frozen is None:
            linearized = linearize(
                self.backbone.model,
                self.split,
                fold_bn=self.cfg.MODEL.FOLD_BN,
                ntk=self.cfg.MODEL.NTK,
                engine=self.cfg.MODEL.ENGINE,
                input_size=getattr(self.backbone, "input_size", None),
            )
            self.frozen = FrozenOutputs(
                linearized,
                self.cfg.TRAIN.CACHE_BATCH_SIZE,
                default_num_workers(self.cfg.DATA.NUM_WORKERS, self.cfg.DATA.AUGMENT),
                device,
                progress=self.progress,
                policy=self.policy,
            )
        return self.frozen

    def close(self) -> None:
        """Drop the stored outputs and remove any memory-mapped files."""
        if self.frozen is not None:
            self.frozen.close()

    def feature_statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the pooled features over the training set (computed once)."""
        if self.statistics is None:
            direct = not self.use_cache or self.world_size > 1
            frozen = self._frozen_outputs(device)
            features = frozen.features(self.data.train, direct=direct).inputs
            self.statistics = FeatureStandardization.statistics(features)
        return self.statistics

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, cached: bool,
        device: torch.device,
    ) -> DataLoader:
        if cached:
            assert isinstance(dataset, CachedInputs)
            return cached_loader(
                dataset, batch_size, shuffle, pin_memory=device.type == "cuda"
            )
        workers = default_num_workers(self.cfg.DATA.NUM_WORKERS, self.cfg.DATA.AUGMENT)
        # Workers would draw the order before the epoch is seeded (under DDP
        # Lightning shards a plain shuffled loader with its own sampler).
        sampler = None
        if shuffle and workers > 0 and self.world_size == 1:
            sampler = EpochShuffle(len(dataset), int(self.cfg.TRAIN.SEED))  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def _module(
        self,
        cls: type,
        optimizer: str,
        cached: bool,
        batch_size: int,
        statistics: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> LightningModule:
        """A freshly seeded protocol module, standardised and given ω̄ as it asks."""
        seed_everything(self.cfg.TRAIN.SEED, workers=True, verbose=False)
        module = cls(
            model=self.backbone.model,
            num_classes=self.data.num_classes,
            cfg=self.cfg,
            task=self.data.task,
            cached=cached,
            optimizer=optimizer or None,
            split=self.split,
            batch_size_per_device=batch_size,
        )
        if statistics is not None:
            module.set_standardization(*statistics)
        if cls.needs_probe:
            module.set_probe(*self.trained_probe())
        return module

    def _fit_once(
        self, name: str, optimizer: str
    ) -> tuple[LightningModule, dict[str, float]]:
        cls = get_protocol_class(name)
        cfg = self.cfg
        trainer = build_trainer(cfg, self.progress)
        self.is_global_zero = trainer.is_global_zero
        world_size = trainer.num_devices * trainer.num_nodes
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        batch_size = max(1, cfg.TRAIN.BATCH_SIZE // world_size)
        device = trainer.strategy.root_device
        standardize = cfg.TRAIN.STANDARDIZE_FEATURES and getattr(
            cls, "standardizes_features", False
        )
        # θ1's outputs and the feature statistics come first: building them draws
        # random numbers (the linearisation checks itself), which must not shift
        # the seeded stream, so that the lightly-shaped classifiers, fitted by a
        # user's Trainer, draw the same numbers as this run.
        cached = self.cached.setdefault(name, self._caches(cls, device))
        statistics = self.feature_statistics(device) if standardize else None
        train, test = self._datasets(cls, cached, device)
        module = self._module(cls, optimizer, cached, batch_size, statistics)
        eval_loader = self._loader(test, batch_size, False, cached, device)
        if isinstance(module, KNNClassifier):
            bank_loader = self._loader(train, batch_size, False, cached, device)
            loaders = [bank_loader, eval_loader]
            with lightning_interrupts(trainer):
                trainer.validate(module, dataloaders=loaders, verbose=self.progress)
        else:
            train_loader = self._loader(train, batch_size, True, cached, device)
            with lightning_interrupts(trainer):
                trainer.fit(module, train_loader, eval_loader)
        return module, _scalar_metrics(trainer)

    def _joint_names(self, name: str) -> tuple[str, ...]:
        """The protocols to train together with ``name`` (empty: train it alone).

        ``grad`` and ``gradfeat`` share a pass when the run asks for both, reads
        cached θ1 outputs and gives both one optimiser.
        """
        if name not in JOINT_PROTOCOLS or not set(JOINT_PROTOCOLS) <= set(self.planned):
            return ()
        classes = [get_protocol_class(n) for n in JOINT_PROTOCOLS]
        if not self.use_cache or not all(
            issubclass(c, GradFeatProtocol) and c.can_cache(self.cfg) for c in classes
        ):
            return ()
        if len({tuple(c.optimizer_names(self.cfg)) for c in classes}) != 1:
            return ()
        if len(classes[0].optimizer_names(self.cfg)) != 1:
            return ()
        # Clipping the norm of the summed gradient would couple the two models.
        if float(self.cfg.TRAIN.get("CLIP_GRAD_NORM", 0.0)) > 0:
            return ()
        return JOINT_PROTOCOLS

    def _fit_joint(
        self, names: Sequence[str]
    ) -> tuple[JointLinearModels, dict[str, float]] | None:
        """Train ``names`` in one pass; ``None`` when it cannot (several processes)."""
        cfg = self.cfg
        trainer = build_trainer(cfg, self.progress)
        if trainer.num_devices * trainer.num_nodes > 1:
            return None
        self.is_global_zero = trainer.is_global_zero
        device = trainer.strategy.root_device
        batch_size = max(1, cfg.TRAIN.BATCH_SIZE)
        classes = [get_protocol_class(n) for n in names]
        standardize = cfg.TRAIN.STANDARDIZE_FEATURES
        cached = [self.cached.setdefault(n, self._caches(c, device)) for n, c in zip(names, classes)]
        if not all(cached):
            return None  # the cache policy chose to recompute θ1
        statistics = self.feature_statistics(device) if standardize else None
        train, test = self._datasets(classes[0], True, device)
        members = {
            name: self._module(cls, cls.optimizer_names(cfg)[0], True, batch_size, statistics)
            for name, cls in zip(names, classes)
        }
        try:
            joint = JointLinearModels(members)
        except ValueError:
            return None
        train_loader = self._loader(train, batch_size, True, True, device)
        eval_loader = self._loader(test, batch_size, False, True, device)
        try:
            with lightning_interrupts(trainer):
                trainer.fit(joint, train_loader, eval_loader)
        except ProtocolFailed:
            pass  # every member failed; joint.failures says how
        return joint, _scalar_metrics(trainer)

    def _run_joint(self, names: Sequence[str]) -> dict[str, ProtocolResult] | None:
        """Results of ``names`` trained in one pass (see :class:`JointLinearModels`)."""
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fitted = None
        probe_failure: ProtocolFailed | None = None
        with _quiet(self.progress):
            try:
                self.trained_probe()
            except ProtocolFailed as exc:
                probe_failure = exc
            else:
                fitted = self._fit_joint(names)
                if fitted is None:
                    return None
        wall_time = time.perf_counter() - start
        results = {}
        for name in names:
            cls = get_protocol_class(name)
            runs: dict[str, tuple[LightningModule, dict[str, float]]] = {}
            failures: dict[str, ProtocolFailed] = {}
            optimizer = cls.optimizer_names(self.cfg)[0]
            if probe_failure is not None:
                failures[""] = probe_failure
            else:
                assert fitted is not None
                joint, metrics = fitted
                if name in joint.failures:
                    failures[optimizer] = joint.failures[name]
                else:
                    runs[optimizer] = (joint.members[name], joint.member_metrics(metrics, name))
            extra = {
                "trained_with": [n for n in names if n != name],
                "shared_wall_time_s": wall_time,
            }
            results[name] = self._result(
                name, cls, runs, failures, wall_time / len(names), extra
            )
        return results

    def trained_probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ω̄: the head of this run's ``linear`` protocol (trained now if not yet).

        Raises:
            ProtocolFailed: The ``linear`` protocol did not finish.
        """
        if self.probe is None and self.probe_failure is None:
            self.run(PROBE_PROTOCOL)
        if self.probe_failure is not None:
            failure = self.probe_failure
            raise ProtocolFailed(
                f"needs the linear probe, which {failure.status}: {failure.reason}"
            )
        assert self.probe is not None
        return self.probe

    def run(self, name: str) -> ProtocolResult:
        """Train and evaluate protocol ``name`` (every optimiser it asks for).

        A :class:`ProtocolFailed` (a diverged or non-finite optimiser run) is caught:
        the best optimiser that finished is reported, and when none did the result
        carries the status and reason with no value.
        """
        if name in self.joint_results:
            return self.joint_results.pop(name)
        joint_names = self._joint_names(name)
        if joint_names:
            joint_results = self._run_joint(joint_names)
            if joint_results is not None:
                self.joint_results.update(joint_results)
                return self.joint_results.pop(name)
        cls = get_protocol_class(name)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        runs: dict[str, tuple[LightningModule, dict[str, float]]] = {}
        failures: dict[str, ProtocolFailed] = {}
        with _quiet(self.progress):
            try:
                if cls.needs_probe:
                    self.trained_probe()
            except ProtocolFailed as exc:
                failures[""] = exc
            else:
                for optimizer in cls.optimizer_names(self.cfg):
                    try:
                        runs[optimizer] = self._fit_once(name, optimizer)
                    except ProtocolFailed as exc:
                        failures[optimizer] = exc
        wall_time = time.perf_counter() - start
        return self._result(name, cls, runs, failures, wall_time)

    def _result(
        self,
        name: str,
        cls: type,
        runs: dict[str, tuple[LightningModule, dict[str, float]]],
        failures: dict[str, ProtocolFailed],
        wall_time: float,
        shared: dict[str, Any] | None = None,
    ) -> ProtocolResult:
        """The result row of protocol ``name`` from its optimiser runs and failures."""
        values = {}
        for optimizer, (module, metrics) in runs.items():
            value = metrics.get(module.metric_name)
            if value is None:
                raise GradfeatError(
                    f"{name} produced no {module.metric_name}; check the data"
                )
            if value != value:
                failures[optimizer] = ProtocolFailed(f"{module.metric_name} is nan")
            else:
                values[optimizer] = value
        extra: dict[str, Any] = {"split": list(self.split), **(shared or {})}
        if failures:
            extra["failures"] = {
                opt or name: f"{exc.status}: {exc.reason}" for opt, exc in failures.items()
            }
        if not values:
            return self._failure(name, cls, failures, wall_time, extra)
        best = max(values, key=values.__getitem__)
        module, metrics = runs[best]
        if name == PROBE_PROTOCOL:
            self.probe = module.probe()
        extra.update({k: v for k, v in metrics.items() if k.startswith("val_")})
        extra["cached"] = self.cached.get(name, False)
        if best:
            extra.update(optimizer=best, values_by_optimizer=values)
        return ProtocolResult(
            protocol=name,
            metric=module.metric_name,
            value=values[best],
            epochs=0 if isinstance(module, KNNClassifier) else self.cfg.TRAIN.EPOCHS,
            seed=int(self.cfg.TRAIN.SEED),
            wall_time_s=wall_time,
            peak_memory_bytes=_peak_memory(module.device),
            trainable_params=module.num_trainable_parameters(),
            extra=extra,
        )

    def _failure(
        self,
        name: str,
        cls: type,
        failures: dict[str, ProtocolFailed],
        wall_time: float,
        extra: dict[str, Any],
    ) -> ProtocolResult:
        """The result of a protocol none of whose optimiser runs finished."""
        diverged = all(exc.status == "diverged" for exc in failures.values())
        reason = "; ".join(
            f"{opt}: {exc.reason}" if opt else exc.reason
            for opt, exc in failures.items()
        )
        result = ProtocolResult(
            protocol=name,
            metric=metric_name(cls, self.data.task),
            value=None,
            epochs=self.cfg.TRAIN.EPOCHS,
            seed=int(self.cfg.TRAIN.SEED),
            wall_time_s=wall_time,
            peak_memory_bytes=_peak_memory(torch.device("cpu")),
            trainable_params=0,
            extra=extra,
            status="diverged" if diverged else "failed",
            reason=reason,
        )
        if name == PROBE_PROTOCOL:
            self.probe_failure = result
        return result


def iter_protocols(
    names: Sequence[str], backbone: Any, data: Any, cfg: CfgNode, progress: bool = True
) -> Iterator[ProtocolResult]:
    """Like :func:`run_protocols`, yielding each result as soon as it is finished.

    A caller that stores each result as it comes keeps the finished protocols when
    a later one fails or the run is interrupted.
    """
    run = _ProtocolRun(backbone, data, cfg, progress)
    run.planned = expand_protocols(names)
    try:
        for name in run.planned:
            result = run.run(name)
            if run.is_global_zero:
                yield result
    finally:
        run.close()


def run_protocols(
    names: Sequence[str], backbone: Any, data: Any, cfg: CfgNode, progress: bool = True
) -> list[ProtocolResult]:
    """Evaluate ``backbone`` on ``data`` with each protocol in ``names``.

    ``all`` means linear, grad, gradfeat, finetune and knn. Without augmentation
    θ1's outputs are computed once and shared by every protocol; ``grad`` and
    ``gradfeat`` expand around the head of this run's ``linear`` protocol (trained
    first when ``linear`` is not asked for). Under DDP every process trains; only
    rank 0 returns results.

    Args:
        names: Protocol names from ``list_protocols()``, or ``all``.
        backbone: A ``gradfeat_plugin.backbones.Backbone`` (``model``, ``split``).
        data: A ``gradfeat_plugin.data.DatasetSplits`` (``train``, ``test``,
            ``num_classes``, ``task``).
        cfg: The run's config (``get_cfg()`` plus overrides).
        progress: Show Lightning's progress bars and info lines.

    Returns:
        One :class:`ProtocolResult` per protocol on rank 0; ``[]`` on other ranks.
        A protocol whose training diverged (NaN/Inf loss) has ``status``
        ``diverged``, its reason and no value; the others are unaffected.

    Raises:
        GradfeatError: Unknown protocol or task, or a bad split.
    """
    return list(iter_protocols(names, backbone, data, cfg, progress))
