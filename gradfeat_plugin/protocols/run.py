"""Run protocols on one backbone and dataset: the orchestration the CLI calls."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import resource
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from lightly.utils.benchmarking import KNNClassifier
from pytorch_lightning import LightningModule, Trainer, seed_everything
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, Dataset, Subset

from ..config.protocol_kwargs import run_settings
from ..errors import GradfeatError, ProtocolFailed, lightning_interrupts
from ..linearize import (
    FeatureStandardization,
    LinearizedBackbone,
    linearize,
    resolve_split,
)
from ..linearize.backbone import equal_modules
from ._base import check_task
from ._models import linearized_from
from ._cache import (
    ITERABLE_LEN_WARNING,
    CachedInputs,
    EpochShuffle,
    FrozenOutputs,
    cached_loader,
    default_num_workers,
)
from ._registry import get_protocol_class
from .finetune import FinetuneClassifier
from .gradfeat import GradfeatClassifier
from .joint import JointLinearModels
from .linear import LinearProbeClassifier
from .settings import RunSettings, build_trainer, setting_label

#: What ``all`` runs, in order (``linear`` first: its head is ω̄ for the next two).
ALL_PROTOCOLS = ("linear", "grad", "gradfeat", "finetune", "knn")
PROBE_PROTOCOL = "linear"
#: A multi-class fine-tuning run at most this many times chance has not trained.
CHANCE_FACTOR = 1.5
#: Fine-tuning ends below its probe when it falls more than this many standard
#: errors of the difference of the two scores (see :func:`below_within_noise`).
NOISE_STANDARD_ERRORS = 2.0
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


def _trainable_parameters(module: LightningModule) -> int:
    """Scalars a protocol trains: its own count, else those of lightly's
    ``get_trainable_parameters``, else those requiring a gradient."""
    count = getattr(module, "num_trainable_parameters", None)
    if count is not None:
        return int(count())
    trainable = getattr(module, "get_trainable_parameters", None)
    params = trainable() if trainable is not None else module.parameters()
    return sum(p.numel() for p in params if p.requires_grad)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _ProtocolRun:
    """Shared state of one ``run_protocols`` call: θ1's stored outputs and ω̄."""

    def __init__(
        self, backbone: Any, data: Any, settings: RunSettings, progress: bool
    ) -> None:
        check_task(data.task)
        self.backbone, self.data, self.settings = backbone, data, settings
        self.progress = progress
        try:
            self.split = resolve_split(
                backbone.model, list(settings.split or backbone.split) or None
            )
        except ValueError as exc:
            raise GradfeatError(
                f"bad θ2 split: {exc}; pick module names of the model"
            ) from exc
        self.policy = settings.cache
        self.use_cache = self.policy.mode != "off" and not settings.augment
        self.frozen: FrozenOutputs | None = None
        #: θ1 outputs of re-initialised θ1s (the Table 1 ablation), by seed.
        self.ablated: dict[int, FrozenOutputs] = {}
        self.cached: dict[str, bool] = {}
        # Under DDP each process stores θ1's outputs of its own shard only.
        self.rank, self.world_size = 0, 1
        self._shards: dict[int, Dataset] = {}
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        #: The chosen probe's metric on the validation split.
        self.probe_metric: float | None = None
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

    def _stored(
        self, kind: str, dataset: Dataset, device: torch.device, name: str | None = None
    ) -> CachedInputs:
        frozen = self._frozen_outputs(device, name)
        if kind == "boundary" or self.world_size == 1:
            return frozen.get(kind, self._shard(dataset))
        # Pooled features are small: computed for all items (the statistics need
        # them all), then sliced to the shard.
        features = frozen.features(dataset, direct=True)
        return features.subset(self._shard_index(len(features)))

    def _datasets(
        self, name: str, cached: bool, device: torch.device, split: str = "train"
    ) -> Dataset:
        """The ``train``, ``val`` (the test split when there is none) or ``test``
        split, as images or as the stored inputs protocol ``name`` reads."""
        dataset = getattr(self.data, split, None)
        if dataset is None:  # no validation split: choices are made on the test split
            dataset = self.data.test
        if not cached:
            return dataset
        return self._stored(get_protocol_class(name).cache, dataset, device, name)

    @property
    def has_validation(self) -> bool:
        """Whether the data hold a validation split (else choices see the test split)."""
        return getattr(self.data, "val", None) is not None

    def _kwargs(self, name: str) -> dict[str, Any]:
        """The keywords of protocol ``name``'s first setting."""
        return self.settings.protocol_kwargs[name][0]

    def settings_of(self, name: str) -> list[dict[str, Any]]:
        """The keyword sets protocol ``name`` runs with, one run each."""
        return list(self.settings.protocol_kwargs[name])

    def _caches(self, name: str, cls: type, device: torch.device) -> bool:
        """Whether ``cls`` reads stored inputs: pooled features whenever caching is
        on; θ1's outputs unless the policy chose ``off``."""
        # A plugin class without a ``cache`` attribute reads images.
        if not (self.use_cache and hasattr(cls, "cache")):
            return False
        if hasattr(cls, "can_cache") and not cls.can_cache(**self._kwargs(name)):
            return False
        splits = [self.data.train, getattr(self.data, "val", None), self.data.test]
        datasets = [self._shard(d) for d in splits if d is not None]
        mode = self._frozen_outputs(device, name).plan(datasets)
        return cls.cache == "features" or mode != "off"

    def _random_theta1(self, name: str) -> int | None:
        """The seed of the re-initialised θ1 protocol ``name`` takes its
        gradient term through (the Table 1 ablation); ``None`` when it reads the
        pretrained θ1, as every other protocol does."""
        kwargs = self._kwargs(name)
        if not (
            issubclass(get_protocol_class(name), GradfeatClassifier)
            and kwargs.get("random_theta1")
        ):
            return None
        seed = kwargs.get("seed")
        return int(self.settings.seed if seed is None else seed)

    def _frozen_outputs(self, device: torch.device, name: str | None = None) -> FrozenOutputs:
        """The store of θ1 outputs and pooled features that protocol ``name`` reads
        (built on first use): the run's, or one per re-initialised θ1, whose
        outputs carry the pretrained network's features beside them."""
        theta1 = None if name is None else self._random_theta1(name)
        if theta1 is not None:
            if theta1 not in self.ablated:
                kwargs = self._kwargs(name)
                self.ablated[theta1] = self._store_of(linearized_from(
                    self.backbone.model, self.split,
                    fold_bn=kwargs.get("fold_bn", self.settings.fold_bn),
                    ntk=kwargs.get("ntk", self.settings.ntk),
                    engine=kwargs.get("engine", self.settings.engine),
                    random_theta1=True, seed=theta1,
                ), device)
            return self.ablated[theta1]
        if self.frozen is None:
            linearized = linearize(
                self.backbone.model,
                self.split,
                fold_bn=self.settings.fold_bn,
                ntk=self.settings.ntk,
                engine=self.settings.engine,
                input_size=getattr(self.backbone, "input_size", None),
            )
            self.frozen = self._store_of(linearized, device)
        return self.frozen

    def _store_of(self, linearized: LinearizedBackbone, device: torch.device) -> FrozenOutputs:
        """A store of ``linearized``'s θ1 outputs under the run's cache policy."""
        return FrozenOutputs(
            linearized,
            self.settings.cache_batch_size,
            default_num_workers(self.settings.num_workers, self.settings.augment),
            device,
            progress=self.progress,
            policy=self.policy,
        )

    def close(self) -> None:
        """Drop the stored outputs and remove any memory-mapped files."""
        for frozen in [self.frozen, *self.ablated.values()]:
            if frozen is not None:
                frozen.close()

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
        workers = default_num_workers(self.settings.num_workers, self.settings.augment)
        # Workers would draw the order before the epoch is seeded (under DDP
        # Lightning shards a plain shuffled loader with its own sampler).
        sampler = None
        if shuffle and workers > 0 and self.world_size == 1:
            sampler = EpochShuffle(len(dataset), self.settings.seed)  # type: ignore[arg-type]
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
        name: str,
        kwargs: dict[str, Any],
        cached: bool,
        batch_size: int,
        statistics: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> LightningModule:
        """A freshly seeded protocol module, standardised and given ω̄ as it asks."""
        cls = get_protocol_class(name)
        seed_everything(self.settings.seed, workers=True, verbose=False)
        given = dict(
            model=self.backbone.model,
            num_classes=self.data.num_classes,
            feature_dim=getattr(self.backbone, "num_features", None),
            task=self.data.task,
            cached=cached,
            split=self.split,
            batch_size_per_device=batch_size,
        )
        shared = self._shared_linearization(cls, kwargs)
        if shared is not None:
            given["model"] = shared
        accepted = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            given = {k: v for k, v in given.items() if k in accepted}
        module = cls(**given, **kwargs)
        theta1 = self._random_theta1(name)
        if cached and theta1 is not None:
            stored, own = self.ablated[theta1].backbone, module.model
            if not (
                equal_modules(own.prefix, stored.prefix)
                and equal_modules(own.activation_model, stored.activation_model)
            ):
                raise RuntimeError(
                    f"{name}'s re-initialised θ1 is not the one whose outputs were stored"
                )
        if statistics is not None:
            module.set_standardization(*statistics)
        if getattr(cls, "needs_probe", False):
            module.set_probe(*self.trained_probe())
        elif kwargs.get("head_init") == "probe":
            module.set_probe(*self.raw_probe(module.device))
        return module

    def _shared_linearization(self, cls: type, kwargs: dict[str, Any]) -> Any:
        """The linearisation θ1's stored outputs come from, for a built-in linear
        model that would build the same one (same split, folding, parametrisation
        and engine; no re-initialised parts): a copy of it replaces its own
        tracing and self-check (seconds per run of a sweep on a large model).
        ``None`` otherwise, or before that linearisation exists."""
        if self.frozen is None or not issubclass(
            cls, (LinearProbeClassifier, GradfeatClassifier)
        ):
            return None
        if kwargs.get("random_theta1") or kwargs.get("random_theta2"):
            return None
        same = (
            kwargs.get("split", self.split) in (None, self.split, list(self.split))
            and kwargs.get("fold_bn", True) == self.settings.fold_bn
            and kwargs.get("ntk", True) == self.settings.ntk
            and kwargs.get("engine", "auto") == self.settings.engine
        )
        return self.frozen.backbone if same else None

    def _starts_from_probe(self, name: str) -> bool:
        """Whether protocol ``name`` expands around ω̄ or starts its head from it."""
        cls = get_protocol_class(name)
        return getattr(cls, "needs_probe", False) or any(
            kwargs.get("head_init") == "probe" for kwargs in self.settings_of(name)
        )

    def raw_probe(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """ω̄ as a head of the raw pooled features: the standardisation the probe
        read is folded in, ``W (f − m)/s + b = (W/s) f + b − (W/s)·m``."""
        weight, bias = self.trained_probe()
        if not self.settings.standardize:
            return weight, bias
        mean, std = (t.to(weight) for t in self.feature_statistics(device))
        # Divided as the probe's standardisation divides: a constant feature by 1.
        weight = weight / FeatureStandardization.usable_std(std)
        return weight, bias - weight @ mean

    def _trainer(self, name: str) -> tuple[Trainer, int, torch.device]:
        """A Trainer for one run of protocol ``name``, its per-process batch size
        and device."""
        trainer = build_trainer(self.settings.trainer_of(name), self.progress)
        self.is_global_zero = trainer.is_global_zero
        world_size = trainer.num_devices * trainer.num_nodes
        self.rank, self.world_size = trainer.global_rank, trainer.world_size
        return trainer, max(1, self.settings.batch_size // world_size), trainer.strategy.root_device

    def _fit_once(self, name: str, kwargs: dict[str, Any]) -> "_Run":
        """Train one setting of ``name`` on the training split, validating on the
        validation split (kNN, which chooses nothing, is scored on the test split)."""
        cls = get_protocol_class(name)
        trainer, batch_size, device = self._trainer(name)
        standardize = self.settings.standardize and getattr(
            cls, "standardizes_features", False
        )
        # θ1's outputs and the feature statistics come first: building them draws
        # random numbers (the linearisation checks itself), which must not shift
        # the seeded stream, so that the protocol classes, fitted by a user's
        # Trainer, draw the same numbers as this run.
        cached = self.cached.setdefault(name, self._caches(name, cls, device))
        statistics = self.feature_statistics(device) if standardize else None
        train = self._datasets(name, cached, device, "train")
        module = self._module(name, kwargs, cached, batch_size, statistics)
        if isinstance(module, KNNClassifier):
            test = self._datasets(name, cached, device, "test")
            bank_loader = self._loader(train, batch_size, False, cached, device)
            eval_loader = self._loader(test, batch_size, False, cached, device)
            loaders = [bank_loader, eval_loader]
            with lightning_interrupts(trainer):
                trainer.validate(module, dataloaders=loaders, verbose=False)
            metrics = _scalar_metrics(trainer)
            return _Run(module, metrics, metrics, kwargs)
        val = self._datasets(name, cached, device, "val")
        train_loader = self._loader(train, batch_size, True, cached, device)
        val_loader = self._loader(val, batch_size, False, cached, device)
        with lightning_interrupts(trainer):
            trainer.fit(module, train_loader, val_loader)
        metrics = _scalar_metrics(trainer)
        return _Run(module, metrics, None if self.has_validation else metrics, kwargs)

    def _test_metrics(self, name: str, module: LightningModule) -> dict[str, float]:
        """The chosen module's metrics on the test split: the one time it is read."""
        cls = get_protocol_class(name)
        trainer, batch_size, device = self._trainer(name)
        cached = self.cached.get(name, False)
        test = self._datasets(name, cached, device, "test")
        with lightning_interrupts(trainer):
            trainer.validate(
                module, self._loader(test, batch_size, False, cached, device),
                verbose=False,
            )
        return _scalar_metrics(trainer)

    def _joint_plan(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """The protocol runs to train in one pass with ``name`` (empty: alone).

        Every setting of ``grad`` and ``gradfeat`` (both, when the run asks for
        both) shares one pass when they read cached θ1 outputs: a learning-rate
        sweep, or the two protocols, or both; so do the settings of the linear
        probe, over the stored features (:class:`JointLinearModels` checks that
        they can share an optimiser).
        """
        if name == PROBE_PROTOCOL:
            names, kind = [name], LinearProbeClassifier
        elif name in JOINT_PROTOCOLS:
            names = [n for n in JOINT_PROTOCOLS if n in self.planned or n == name]
            kind = GradfeatClassifier
        else:
            return []
        classes = [get_protocol_class(n) for n in names]
        if not self.use_cache or not all(
            issubclass(c, kind) and c.can_cache(**self._kwargs(n))
            for n, c in zip(names, classes)
        ):
            return []
        if len({self._random_theta1(n) for n in names}) > 1:
            return []  # the members read different θ1 outputs
        plan = [(n, kwargs) for n in names for kwargs in self.settings_of(n)]
        # Clipping the norm of the summed gradient would couple the models.
        if len(plan) < 2 or any(kwargs.get("clip_grad_norm") for _, kwargs in plan):
            return []
        return plan

    def _fit_joint(self, plan: Sequence[tuple[str, dict[str, Any]]]) -> JointLinearModels | None:
        """Train the runs of ``plan`` in one pass; ``None`` when it cannot (several
        processes, θ1 not stored, or runs that cannot share an optimiser)."""
        names = list(dict.fromkeys(n for n, _ in plan))
        # A pass holds the linear probe's settings, or grad's and gradfeat's: one
        # length.
        trainer = build_trainer(self.settings.trainer_of(names[0]), self.progress)
        if trainer.num_devices * trainer.num_nodes > 1:
            return None
        self.is_global_zero = trainer.is_global_zero
        device = trainer.strategy.root_device
        batch_size = max(1, self.settings.batch_size)
        classes = [get_protocol_class(n) for n in names]
        cached = [
            self.cached.setdefault(n, self._caches(n, c, device))
            for n, c in zip(names, classes)
        ]
        if not all(cached):
            return None  # the cache policy chose to recompute θ1
        statistics = self.feature_statistics(device) if self.settings.standardize else None
        train = self._datasets(names[0], True, device, "train")
        val = self._datasets(names[0], True, device, "val")
        members = {
            f"run{index}": self._module(name, kwargs, True, batch_size, statistics)
            for index, (name, kwargs) in enumerate(plan)
        }
        try:
            joint = JointLinearModels(members)
        except ValueError:
            return None
        train_loader = self._loader(train, batch_size, True, True, device)
        eval_loader = self._loader(val, batch_size, False, True, device)
        try:
            with lightning_interrupts(trainer):
                trainer.fit(joint, train_loader, eval_loader)
        except ProtocolFailed:
            pass  # every member failed; joint.failures says how
        joint.val_metrics = _scalar_metrics(trainer)
        return joint

    def _run_joint(
        self, plan: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, ProtocolResult] | None:
        """Results of the runs of ``plan`` trained in one pass (see
        :class:`JointLinearModels`); each protocol's best setting on the validation
        split is then scored on the test split."""
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        joint = None
        probe_failure: ProtocolFailed | None = None
        with _quiet(self.progress):
            try:
                if any(self._starts_from_probe(n) for n, _ in plan):
                    self.trained_probe()
            except ProtocolFailed as exc:
                probe_failure = exc
            else:
                joint = self._fit_joint(plan)
                if joint is None:
                    return None
            wall_time = time.perf_counter() - start
            names = list(dict.fromkeys(n for n, _ in plan))
            results = {}
            for name in names:
                runs: dict[str, _Run] = {}
                failures: dict[str, ProtocolFailed] = {}
                if probe_failure is not None:
                    failures[""] = probe_failure
                for index, (member_name, kwargs) in enumerate(plan):
                    if member_name != name or joint is None:
                        continue
                    key, label = f"run{index}", setting_label(kwargs)
                    if key in joint.failures:
                        failures[label] = joint.failures[key]
                        continue
                    metrics = joint.member_metrics(joint.val_metrics, key)
                    test = None if self.has_validation else metrics
                    runs[label] = _Run(joint.members[key], metrics, test, kwargs)
                extra = {
                    "trained_with": [n for n in names if n != name],
                    "runs_in_pass": len(plan),
                    "shared_wall_time_s": wall_time,
                }
                results[name] = self._result(
                    name, get_protocol_class(name), runs, failures,
                    wall_time * sum(n == name for n, _ in plan) / len(plan), extra,
                )
        return results

    def trained_probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ω̄: the head of this run's ``linear`` protocol (trained now if not yet),
        the setting chosen on the validation split.

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
        """Train protocol ``name`` once per setting (optimiser, learning rate), choose
        the best on the validation split and score that one on the test split.

        A :class:`ProtocolFailed` (a diverged or non-finite run) is caught: the best
        setting that finished is reported, and when none did the result carries the
        status and reason with no value.
        """
        if name in self.joint_results:
            return self.joint_results.pop(name)
        plan = self._joint_plan(name)
        if plan:
            joint_results = self._run_joint(plan)
            if joint_results is not None:
                self.joint_results.update(joint_results)
                return self.joint_results.pop(name)
        cls = get_protocol_class(name)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        runs: dict[str, _Run] = {}
        failures: dict[str, ProtocolFailed] = {}
        with _quiet(self.progress):
            try:
                if self._starts_from_probe(name):
                    self.trained_probe()
            except ProtocolFailed as exc:
                failures[""] = exc
            else:
                for kwargs in self.settings_of(name):
                    label = setting_label(kwargs)
                    try:
                        runs[label] = self._fit_once(name, kwargs)
                    except ProtocolFailed as exc:
                        failures[label] = exc
            result = self._result(name, cls, runs, failures, time.perf_counter() - start)
        return result

    def _result(
        self,
        name: str,
        cls: type,
        runs: dict[str, "_Run"],
        failures: dict[str, ProtocolFailed],
        wall_time: float,
        shared: dict[str, Any] | None = None,
    ) -> ProtocolResult:
        """The result row of protocol ``name``: the setting with the best validation
        metric, scored on the test split."""
        values = {}
        metric = metric_name(cls, self.data.task)
        for label, outcome in runs.items():
            metric = getattr(outcome.module, "metric_name", metric)
            value = outcome.selection.get(metric)
            if value is None:
                raise GradfeatError(f"{name} produced no {metric}; check the data")
            if value != value:
                failures[label] = ProtocolFailed(f"{metric} is nan")
            elif (reason := self._collapsed(outcome, metric, value)) is not None:
                failures[label] = ProtocolFailed(reason)
            else:
                values[label] = value
        extra: dict[str, Any] = {"split": list(self.split), **(shared or {})}
        if failures:
            extra["failures"] = {
                label or name: f"{exc.status}: {exc.reason}"
                for label, exc in failures.items()
            }
        if not values:
            return self._failure(name, cls, failures, wall_time, extra)
        best = max(values, key=values.__getitem__)
        outcome = runs[best]
        test = outcome.test
        if test is None:  # the test split's one pass, counted in the wall time
            start = time.perf_counter()
            test = self._test_metrics(name, outcome.module)
            wall_time += time.perf_counter() - start
        if name == PROBE_PROTOCOL:
            self.probe = outcome.module.probe()
            self.probe_metric = values[best]
        extra.update({k: v for k, v in test.items() if k.startswith("val_")})
        extra["cached"] = self.cached.get(name, False)
        extra["selected_on"] = self._selected_on(name, runs)
        if best:
            chosen = outcome.kwargs
            extra.update(
                setting=best,
                optimizer=chosen.get("optimizer"),
                lr=chosen.get("lr"),
                values_by_setting=values,
                values_by_optimizer=_best_by_optimizer(runs, values),
                selection_metric=values[best],
            )
        return ProtocolResult(
            protocol=name,
            metric=metric,
            value=test[metric],
            epochs=(
                0 if isinstance(outcome.module, KNNClassifier)
                else self.settings.trainer_of(name).epochs
            ),
            seed=self.settings.seed,
            wall_time_s=wall_time,
            peak_memory_bytes=_peak_memory(outcome.module.device),
            trainable_params=_trainable_parameters(outcome.module),
            extra=extra,
        )

    def _collapsed(self, outcome: "_Run", metric: str, value: float) -> str | None:
        """Why a fine-tuning run's number means nothing, or ``None``: it stays at
        chance (multi-class accuracy at most 1.5 / classes), or ends below the
        linear probe its head started from by more than the noise of the split
        both were scored on."""
        if not isinstance(outcome.module, FinetuneClassifier):
            return None
        chance = 1.0 / self.data.num_classes
        if self.data.task == "multiclass" and value <= CHANCE_FACTOR * chance:
            return (
                f"{metric} {100 * value:.2f} % stays at chance ({100 * chance:.2f} %); "
                "fine-tuning did not train"
            )
        start = self.probe_metric
        if outcome.kwargs.get("head_init") != "probe" or start is None or value >= start:
            return None
        scored = len(self._datasets("finetune", False, None, "val"))
        if below_within_noise(start, value, scored):
            return None
        return (
            f"{metric} {100 * value:.2f} % ends below the linear probe it started "
            f"from ({100 * start:.2f} %, {scored} images); lower the learning rate"
        )

    def _selected_on(self, name: str, runs: dict[str, "_Run"]) -> str:
        """What the row's choices were made on: ``validation``, ``test`` (no
        validation split), or ``nothing``: kNN, or a protocol run with one setting
        whose probe (where it starts from one) had one setting too."""
        if all(isinstance(r.module, KNNClassifier) for r in runs.values()):
            return "nothing"
        single = len(self.settings_of(name)) == 1 and (
            not self._starts_from_probe(name)
            or len(self.settings_of(PROBE_PROTOCOL)) == 1
        )
        if single:
            return "nothing"
        return "validation" if self.has_validation else "test"

    def _failure(
        self,
        name: str,
        cls: type,
        failures: dict[str, ProtocolFailed],
        wall_time: float,
        extra: dict[str, Any],
    ) -> ProtocolResult:
        """The result of a protocol none of whose runs finished."""
        diverged = all(exc.status == "diverged" for exc in failures.values())
        reason = "; ".join(
            f"{label}: {exc.reason}" if label else exc.reason
            for label, exc in failures.items()
        )
        result = ProtocolResult(
            protocol=name,
            metric=metric_name(cls, self.data.task),
            value=None,
            epochs=self.settings.trainer_of(name).epochs,
            seed=self.settings.seed,
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


@dataclass
class _Run:
    """One setting's run: the module, the metrics choices are made on (validation
    split) and, where already known, its metrics on the test split."""

    module: LightningModule
    selection: dict[str, float]
    test: dict[str, float] | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _best_by_optimizer(runs: dict[str, _Run], values: dict[str, float]) -> dict[str, float]:
    """The best selection metric of each optimiser over its learning rates."""
    best: dict[str, float] = {}
    for label, value in values.items():
        optimizer = str(runs[label].kwargs.get("optimizer") or "")
        best[optimizer] = max(value, best.get(optimizer, value))
    return best


def iter_protocols(
    names: Sequence[str],
    backbone: Any,
    data: Any,
    cfg: Any,
    progress: bool = True,
) -> Iterator[ProtocolResult]:
    """Like :func:`run_protocols`, yielding each result as soon as it is finished.

    A caller that stores each result as it comes keeps the finished protocols when
    a later one fails or the run is interrupted.
    """
    settings = cfg if isinstance(cfg, RunSettings) else run_settings(cfg, names)
    run = _ProtocolRun(backbone, data, settings, progress)
    run.planned = expand_protocols(names)
    missing = [n for n in {*run.planned, PROBE_PROTOCOL} if n not in settings.protocol_kwargs]
    if missing:
        raise GradfeatError(f"the run's settings have no keywords for {', '.join(missing)}")
    try:
        for name in run.planned:
            result = run.run(name)
            if run.is_global_zero:
                yield result
    finally:
        run.close()


def run_protocols(
    names: Sequence[str],
    backbone: Any,
    data: Any,
    cfg: Any,
    progress: bool = True,
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
        cfg: The run's merged config (``get_cfg()`` plus overrides), turned into
            every protocol's plain keywords by
            :func:`~gradfeat_plugin.config.protocol_kwargs.run_settings`; or those
            :class:`RunSettings` themselves.
        progress: Show Lightning's progress bars and info lines.

    Returns:
        One :class:`ProtocolResult` per protocol on rank 0; ``[]`` on other ranks.
        A protocol whose training diverged (NaN/Inf loss) has ``status``
        ``diverged``, its reason and no value; the others are unaffected.

    Raises:
        GradfeatError: Unknown protocol or task, or a bad split.
    """
    return list(iter_protocols(names, backbone, data, cfg, progress))


def below_within_noise(start: float, value: float, images: int) -> bool:
    """Whether ``value`` lies below ``start`` by no more than noise: at most
    :data:`NOISE_STANDARD_ERRORS` standard errors of the difference of two
    proportions scored on the same ``images`` (``sqrt((p(1-p) + q(1-q)) / n)``,
    which ignores that the two share their images and so errs towards keeping
    a run).

    On 10 validation images (2 % of mnist5k's labels) a probe at 100 % and a
    fine-tuning run at 90 % differ by one image, within noise (margin 19 %); on 400
    images, 95 % against 90 % is not (margin 3.7 %).

    >>> below_within_noise(1.0, 0.9, 10), below_within_noise(0.95, 0.9, 400)
    (True, False)
    """
    drop = start - value
    if drop <= 0.0 or images <= 0:
        return drop <= 0.0
    variance = start * (1.0 - start) + value * (1.0 - value)
    return drop <= NOISE_STANDARD_ERRORS * math.sqrt(max(variance, 0.0) / images)
