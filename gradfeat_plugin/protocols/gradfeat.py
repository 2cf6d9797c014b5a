"""``gradfeat``: the full model ``w1ᵀf + ω̄ᵀJw2`` (Mu, Liang, Li, ICLR 2020)."""

from __future__ import annotations

import os
import random
from typing import Any, List, Sequence

import numpy as np
import torch
from pytorch_lightning import seed_everything
from torch import Tensor, nn

from ..errors import lightning_interrupts
from ..linearize import FeatureStandardization, LinearizedBackbone, default_split
from ..linearize import resolve_split
from ..linearize._ntk import effective_parameters
from ..linearize._reinit import INITS
from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier, check_feature_dim
from ._cache import FrozenOutputs, cached_loader
from ._models import install_probe, linearized_from
from .linear import LinearProbeClassifier
from .settings import TrainerSettings, build_trainer, silent_lightning

Probe = tuple[Tensor, Tensor | None]


def whole_module_split(model: nn.Module, split: SplitSpec) -> SplitSpec:
    """θ2 inside a whole SSL module: its backbone's top block when ``split`` is None.

    lightly's methods keep the backbone as ``self.backbone``; their projection
    heads come last, so the generic default (the last child with parameters) would
    pick a head the features do not depend on.
    """
    backbone = getattr(model, "backbone", None)
    if split is None and isinstance(backbone, nn.Module) and backbone is not model:
        return [f"backbone.{name}" for name in default_split(backbone)]
    return split


def as_probe(probe: Any) -> Probe | None:
    """``(weight, bias)`` from a tuple, an ``nn.Linear`` or a lightly classifier."""
    if probe is None:
        return None
    head = getattr(probe, "classification_head", probe)
    if isinstance(head, nn.Linear):
        weight, bias = effective_parameters(head)
        return weight.detach().clone(), None if bias is None else bias.detach().clone()
    weight, bias = probe
    return weight.detach().clone(), None if bias is None else bias.detach().clone()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class GradfeatClassifier(ProtocolClassifier):
    """The first-order expansion of fine-tuning around the probe ω̄, as a lightly
    benchmark module.

    Logits are ``w1ᵀf(x) + b + ω̄ᵀ J_θ2(x) w2``; ``w1``/``b`` start at the probe and
    ``w2`` at zero, so before training the model equals the probe exactly. Only
    ``w1``, ``b`` and ``w2`` train.

    lightly's ``LinearClassifier`` arguments, then plain keywords. Fitted with a
    Lightning ``Trainer``, it standardises the features with their training-set
    statistics and trains the linear probe ω̄ (unless ``probe`` is given) before
    its own training, so it gives ``benchmarks/eval.py``'s number. Installing a
    probe with :meth:`set_probe` first (what ``run_protocols`` does) skips that.

    Args:
        model: A backbone whose forward returns ``(B, d)`` features, a whole SSL
            module (lightly's methods) whose forward does (θ2 is then looked for in
            ``model.backbone`` unless ``split`` names it), or a
            ``LinearizedBackbone`` (copied).
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate (the paper's Adam: 1e-3).
        feature_dim: ``d``; checked against the model when given.
        num_classes: Number of classes (labels, for multi-label tasks).
        topk: Top-k accuracies to log.
        split: θ2 module name(s) inside ``model``; default: the top block.
        probe: ω̄ of raw features: ``(weight, bias)``, an ``nn.Linear`` or a trained
            lightly ``LinearClassifier``; ``None`` fits it at the start of training.
        probe_epochs: Epochs of that fit; ``None`` takes the Trainer's.
        probe_lr: Learning rate of that fit; ``None`` takes ``lr``.
        probe_ntk_head: That probe's head in the NTK parametrisation; ``None``
            takes ``ntk_head``.
        probe_weight_decay: Weight decay of that fit; ``None`` takes
            ``weight_decay``.
        probe_lr_decay_every: Fraction of that fit's steps between two decays;
            ``None`` takes ``lr_decay_every``.
        standardize: Standardise the features with training-set statistics at the
            start of training.
        fold_bn: Fold θ2's BatchNorms into their convolutions.
        ntk: NTK parametrisation of θ2 and w2.
        engine: The JVP engine (``auto``, ``dual``, ``func``, ...).
        ntk_head: The w1 head (and the probe fitted first) in the NTK
            parametrisation of the authors' code.
        random_theta1: The paper's Table 1 ablation: the gradient term through a
            re-initialised θ1 (seeded by ``seed``; activations stay pretrained).
        random_theta2: The same for θ2.
        random_probe: The gradient term uses a random ω instead of ω̄.
        random_init: How the random θ2 and ω are drawn: ``default`` (the layers'
            own initialisers; ω as ``nn.Linear``'s weight) or ``ntk`` (as the
            authors' ``NTKConv2d.init()`` and ``NTKLinear.init()``: θ2's BatchNorms
            folded, effective weights ``√(1/out)·N(0, 1)``, biases ``√0.1·N(0, 1)``;
            ω ``√(1/num_classes)·N(0, 1)``).
        cache_batch_size: Batch size of the pass that computes the statistics.
        **kwargs: ``task``, ``cached``, ``optimizer``, ``betas``, ``weight_decay``,
            ``momentum``, ``scale_lr``, ``lr_decay``, ``lr_decay_every``,
            ``clip_grad_norm``, ``seed`` (``None``: ``seed_everything``'s): see
            :class:`ProtocolClassifier`.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> model = GradfeatClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> model.set_probe(torch.randn(10, 64), torch.zeros(10))
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    needs_probe = True

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int = 64,
        lr: float = 1e-3,
        feature_dim: int | None = None,
        num_classes: int = 1000,
        topk: Sequence[int] = (1, 5),
        *,
        split: SplitSpec = None,
        probe: Any = None,
        probe_epochs: int | None = None,
        probe_lr: float | None = None,
        probe_ntk_head: bool | None = None,
        probe_weight_decay: float | None = None,
        probe_lr_decay_every: float | None = None,
        standardize: bool = True,
        fold_bn: bool = True,
        ntk: bool = True,
        engine: str = "auto",
        ntk_head: bool = False,
        random_theta1: bool = False,
        random_theta2: bool = False,
        random_probe: bool = False,
        random_init: str = "default",
        cache_batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        if random_init not in INITS:
            raise ValueError(
                f"random_init must be one of {', '.join(INITS)}, got {random_init!r}"
            )
        if kwargs.get("seed") is None:
            # lightly scripts call seed_everything(seed), which Lightning records here.
            kwargs["seed"] = int(os.environ.get("PL_GLOBAL_SEED", 0))
        arguments = dict(locals(), **kwargs)
        if not isinstance(model, LinearizedBackbone):
            split = resolve_split(model, whole_module_split(model, split))
        backbone = linearized_from(
            model, split, fold_bn, ntk, engine, random_theta1, random_theta2,
            kwargs["seed"], random_init,
        )
        backbone.ntk_head = ntk_head
        backbone.reset_classifier(num_classes)
        check_feature_dim(feature_dim, backbone.num_features)
        super().__init__(
            backbone,
            batch_size_per_device,
            lr,
            backbone.num_features,
            num_classes,
            topk,
            **kwargs,
        )
        self.classification_head = backbone.head
        self.freeze_all_but_trainable()
        self.probe_epochs = probe_epochs
        self.probe_lr = lr if probe_lr is None else probe_lr
        self.probe_ntk_head = ntk_head if probe_ntk_head is None else probe_ntk_head
        self.probe_weight_decay = (
            self.weight_decay if probe_weight_decay is None else probe_weight_decay
        )
        self.probe_lr_decay_every = (
            self.lr_decay_every
            if probe_lr_decay_every is None
            else probe_lr_decay_every
        )
        self.standardize = standardize
        self.ntk_head = ntk_head
        self.random_probe = random_probe
        self.random_init = random_init
        self.cache_batch_size = cache_batch_size
        self._linearization = dict(fold_bn=fold_bn, ntk=ntk, engine=engine)
        # The backbone as given, not a submodule: the probe is built from it as the
        # command line builds it, so that both draw the same random numbers.
        object.__setattr__(self, "_source_model", model)
        self._given_probe = as_probe(probe)
        self.register_buffer("prepared", torch.tensor(False))
        arguments.update(split=list(backbone.split), feature_dim=backbone.num_features)
        self.save_arguments(arguments, "kwargs", "probe")

    @torch.no_grad()
    def set_probe(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Install the trained probe: ω̄ (frozen), ``w1``/``b`` from it, ``w2`` at 0.

        ``weight`` and ``bias`` are those of the function the probe computes on the
        features as this model reads them (standardised, once
        :meth:`set_standardization` was called). Training then starts from it.
        """
        install_probe(
            self.model, weight, bias, self.random_probe, self.seed, self.random_init
        )
        self.prepared.fill_(True)

    def forward(self, images: Inputs) -> Tensor:
        boundary = images if self.cached else self.model.forward_prefix(images)
        return self.logits_from_features(*self.model.features_from_prefix(boundary))

    def logits_from_features(self, features: Tensor, jvp: Tensor) -> Tensor:
        """Logits from the standardised ``f`` and ``J·w2`` (see ``features_from_prefix``)."""
        return self.model.forward_head(torch.cat([features, jvp], dim=1))

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        return [*self.model.head.parameters(), *self.model.tangents]

    def on_train_start(self) -> None:
        """Standardise with training-set statistics and install ω̄ (fitting it
        first when no ``probe`` was given), unless a probe was installed before
        (by ``run_protocols``, or in a reloaded model)."""
        if bool(self.prepared):
            return
        loader = self.trainer.train_dataloader
        dataset = loader.dataset  # type: ignore[union-attr]
        frozen = FrozenOutputs(self.model, self.cache_batch_size, 0, self.prepared.device)
        features = frozen.features(dataset, direct=True)
        mean, std = FeatureStandardization.statistics(features.inputs)
        if self.standardize:
            self.set_standardization(mean, std)
        else:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        if self._given_probe is not None:
            weight, bias = self._given_probe
            # A probe of raw features, e.g. lightly's LinearClassifier, rewritten
            # for standardised ones: W (f - m) / s + b' = W f + b.
            weight = weight.to(mean)
            bias = torch.zeros(len(weight)).to(mean) if bias is None else bias.to(mean)
            self.set_probe(weight * std, bias + weight @ mean)
        else:
            self.set_probe(*self._fit_probe(features, mean, std, loader))

    def _fit_probe(
        self, features: Any, mean: Tensor, std: Tensor, loader: Any
    ) -> tuple[Tensor, Tensor]:
        """ω̄ as ``run_protocols`` trains it: the linear protocol, seeded, on stored
        features, with this model's optimiser and the ``probe_*`` settings."""
        epochs = self.probe_epochs or self.trainer.max_epochs
        if not epochs or epochs < 0:
            raise ValueError("the probe needs a number of epochs: pass probe_epochs")
        state = _rng_state()
        try:
            with silent_lightning():
                seed_everything(self.seed, workers=True, verbose=False)
                accelerator = "gpu" if mean.device.type == "cuda" else "cpu"
                trainer = build_trainer(
                    TrainerSettings(epochs=epochs, accelerator=accelerator, devices=1),
                    progress=False,
                    limit_val_batches=0,
                )
                probe = LinearProbeClassifier(
                    self._source_model,  # type: ignore[arg-type]
                    self.batch_size_per_device,
                    self.probe_lr,
                    num_classes=self.num_classes,
                    split=self.model.split,
                    ntk_head=self.probe_ntk_head,
                    task=self.task,
                    cached=True,
                    optimizer=self.optimizer_name,
                    betas=self.betas,
                    weight_decay=self.probe_weight_decay,
                    momentum=self.momentum,
                    scale_lr=self.scale_lr,
                    lr_decay=self.lr_decay,
                    lr_decay_every=self.probe_lr_decay_every,
                    clip_grad_norm=self.clip_norm,
                    seed=self.seed,
                    **self._linearization,
                )
                probe.set_standardization(mean, std)
                train = cached_loader(features, loader.batch_size, shuffle=True)
                with lightning_interrupts(trainer):
                    trainer.fit(probe, train)
        finally:
            _set_rng_state(state)
        return probe.probe()
