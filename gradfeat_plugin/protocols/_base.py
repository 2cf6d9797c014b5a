"""What every trained protocol shares: tasks, metrics, the paper's optimisers."""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from lightly.utils.benchmarking.linear_classifier import BaseClassifier
from lightly.utils.benchmarking.topk import mean_topk_accuracy
from torch import Tensor, nn
from torch.optim import SGD, Adam, Optimizer
from torch.optim.lr_scheduler import StepLR
from torchmetrics.classification import MultilabelAveragePrecision

from ..errors import GradfeatError, ProtocolDiverged, ProtocolFailed

TASKS = ("multiclass", "multilabel")

Inputs = Union[Tensor, Sequence[Tensor]]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of training epoch ``epoch`` of a run seeded ``seed``."""
    return seed * 100_003 + epoch


def check_task(task: str) -> None:
    """Raise a :class:`GradfeatError` for an unknown task name."""
    if task not in TASKS:
        raise GradfeatError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")


def check_finite(values: Tensor, what: str, protocol: str) -> None:
    """Raise :class:`ProtocolFailed` when ``values`` hold a NaN or an infinity.

    Args:
        values: Features or logits of one batch.
        what: What they are, for the message (``features``, ``logits``).
        protocol: The protocol's name.
    """
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ProtocolFailed(
            f"{protocol} failed: {bad} of {values.numel()} {what} of a batch are "
            "non-finite (NaN or Inf); check the backbone's weights and the inputs"
        )


#: Weight decay of each optimiser when none is given: the paper's values.
DEFAULT_WEIGHT_DECAY = {"adam": 1e-6, "sgd": 5e-5}
OPTIMIZERS = tuple(DEFAULT_WEIGHT_DECAY)


def check_optimizer(name: str) -> None:
    """Raise a :class:`GradfeatError` for an optimiser other than ``adam``/``sgd``."""
    if name not in OPTIMIZERS:
        raise GradfeatError(f"unknown optimizer {name!r}; use adam or sgd")


def build_optimizer(
    name: str,
    params: List[Any],
    lr: float,
    betas: Sequence[float] = (0.5, 0.999),
    weight_decay: float | None = None,
    momentum: float = 0.9,
) -> Optimizer:
    """The paper's Adam or SGD.

    Args:
        name: ``adam`` or ``sgd``.
        params: Parameters (or parameter groups) to optimise.
        lr: Learning rate (already scaled, if scaling is on).
        betas: Adam's betas.
        weight_decay: ``None`` takes :data:`DEFAULT_WEIGHT_DECAY` of the optimiser.
        momentum: SGD's momentum.

    >>> build_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 0.1).defaults["weight_decay"]
    5e-05
    """
    check_optimizer(name)
    decay = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    if name == "adam":
        return Adam(params, lr=lr, betas=tuple(betas), weight_decay=decay)  # type: ignore[arg-type]
    return SGD(params, lr=lr, momentum=momentum, weight_decay=decay)


def plain(value: Any) -> Any:
    """Tuples as lists: what a checkpoint stores and ``weights_only`` reads back."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def feature_topk(topk: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """``topk`` capped at the number of classes, without repeats."""
    return tuple(sorted({min(int(k), num_classes) for k in topk}))


def check_feature_dim(feature_dim: int | None, actual: int) -> None:
    """Raise when a given ``feature_dim`` is not the model's feature width."""
    if feature_dim is not None and feature_dim != actual:
        raise ValueError(
            f"feature_dim={feature_dim} but the model's features have {actual} "
            "dimensions; leave feature_dim out to take them from the model"
        )


class ProtocolClassifier(BaseClassifier):
    """A lightly ``BaseClassifier`` that knows the task, the optimiser and the cache.

    Subclasses override ``forward`` and ``get_trainable_parameters`` as in lightly,
    call :meth:`freeze_all_but_trainable` at the end of ``__init__`` and save their
    arguments with :meth:`save_arguments`. Inputs are images or, when ``cached``,
    the precomputed tensors named by the class's ``cache`` attribute
    (``"features"``: pooled ``f``; ``"boundary"``: θ1's outputs).

    Args:
        model: The module the protocol is built around.
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate.
        feature_dim: Size of the features the classification head reads.
        num_classes: Number of classes (labels, for multi-label tasks).
        topk: Top-k accuracies to log (capped at ``num_classes``).
        task: ``multiclass`` (cross-entropy, top-1/top-5) or ``multilabel``
            (binary cross-entropy, mAP).
        cached: Inputs are precomputed tensors instead of images.
        optimizer: ``adam`` or ``sgd``.
        betas: Adam's betas (the paper's 0.5, 0.999).
        weight_decay: ``None`` takes the paper's: 1e-6 with Adam, 5e-5 with SGD.
        momentum: SGD's momentum.
        scale_lr: Multiply ``lr`` by the global batch size / 256, as lightly does.
        lr_decay: Factor applied to the learning rate every ``lr_decay_every``.
        lr_decay_every: Fraction of the training steps between two decays.
        clip_grad_norm: Clip each step's gradient norm at this value (0: off).
        seed: Seeds each training epoch (with the epoch number).
    """

    #: Which precomputed inputs the protocol consumes when ``cached``.
    cache: str = "boundary"
    #: Whether the head reads standardised features (see ``set_standardization``).
    standardizes_features: bool = True
    #: Whether the protocol needs a trained linear probe ω̄ (see ``set_probe``).
    needs_probe: bool = False

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int,
        lr: float,
        feature_dim: int,
        num_classes: int,
        topk: Sequence[int] = (1, 5),
        *,
        task: str = "multiclass",
        cached: bool = False,
        optimizer: str = "adam",
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float | None = None,
        momentum: float = 0.9,
        scale_lr: bool = False,
        lr_decay: float = 0.5,
        lr_decay_every: float = 0.25,
        clip_grad_norm: float = 0.0,
        seed: int = 0,
    ) -> None:
        check_task(task)
        check_optimizer(optimizer)
        with warnings.catch_warnings():
            # lightly saves the subclass's arguments (a probe among them); they are
            # replaced by plain values in save_arguments.
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(
                model=model,
                batch_size_per_device=batch_size_per_device,
                lr=lr,
                feature_dim=feature_dim,
                num_classes=num_classes,
                topk=feature_topk(topk, num_classes),
            )
        self.task = task
        self.cached = cached
        self.optimizer_name = optimizer
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.scale_lr = scale_lr
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.clip_norm = float(clip_grad_norm)
        self.seed = int(seed)
        if task == "multilabel":
            self.criterion = nn.BCEWithLogitsLoss()
            self.val_map = MultilabelAveragePrecision(num_labels=num_classes)

    def save_arguments(self, arguments: Dict[str, Any], *ignore: str) -> None:
        """Save the constructor's arguments (``locals()``) as the hyperparameters,
        plain values only, so that ``load_from_checkpoint(path, model=...)``
        rebuilds the class (``weights_only`` included)."""
        skip = {"self", "model", "__class__", *ignore}
        self.hparams.clear()
        self.save_hyperparameters(
            {k: plain(v) for k, v in arguments.items() if k not in skip}
        )

    @classmethod
    def can_cache(cls, **kwargs: Any) -> bool:
        """Whether the protocol built with these keywords can read stored θ1 outputs."""
        return True

    @property
    def metric_name(self) -> str:
        """The validation metric a result reports: ``val_top1`` or ``val_map``."""
        return "val_map" if self.task == "multilabel" else "val_top1"

    def set_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Standardise the features the head reads with fixed training statistics.

        The map is ``self.model.standardize`` (a :class:`FeatureStandardization`).
        """
        self.model.standardize.set(mean, std)

    def freeze_all_but_trainable(self) -> None:
        """``requires_grad`` on the trainable parameters only (DDP wants no unused)."""
        self.requires_grad_(False)
        for param in self.get_trainable_parameters():
            param.requires_grad_(True)

    def num_trainable_parameters(self) -> int:
        """Number of scalars the protocol trains."""
        return sum(p.numel() for p in self.get_trainable_parameters())

    def shared_step(
        self, batch: Tuple[Any, ...], batch_idx: int
    ) -> Tuple[Tensor, Dict[int, Tensor]]:
        inputs, targets = batch[0], batch[1]
        logits = self.forward(inputs)
        # Before the first update nothing can have diverged: non-finite logits mean
        # broken weights or inputs. Later in training a non-finite loss is divergence
        # (see training_step); at validation any non-finite logit fails the protocol.
        if not self.training or self.global_step == 0:
            check_finite(logits, "logits", type(self).__name__)
        if self.task == "multilabel":
            return self.criterion(logits, targets.to(logits.dtype)), {}
        loss = self.criterion(logits, targets)
        _, predicted = logits.topk(max(self.topk))
        return loss, mean_topk_accuracy(predicted, targets, k=self.topk)

    def on_train_epoch_start(self) -> None:
        """Seed the epoch from ``seed`` and the epoch number.

        The shuffle of the epoch then depends on nothing else: not on how often a
        Trainer validates or whether it runs a sanity check (each DataLoader pass
        draws a random number), so ``run_protocols`` and a user's own Trainer see
        the same batches.
        """
        torch.manual_seed(epoch_seed(self.seed, self.current_epoch))

    def training_step(self, batch: Tuple[Any, ...], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if not torch.isfinite(loss):
            raise ProtocolDiverged(
                f"training loss is {loss.item()} at step {self.global_step}; "
                "lower the learning rate or check the inputs for NaN/Inf"
            )
        return loss

    def validation_step(self, batch: Tuple[Any, ...], batch_idx: int) -> Tensor:
        if self.task != "multilabel":
            return super().validation_step(batch, batch_idx)
        inputs, targets = batch[0], batch[1]
        logits = self.forward(inputs)
        check_finite(logits, "logits", type(self).__name__)
        loss = self.criterion(logits, targets.to(logits.dtype))
        self.val_map.update(logits.float(), targets.long())
        batch_size = len(targets)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log("val_map", self.val_map, prog_bar=True, batch_size=batch_size)
        return loss

    def clip_grad_norm(self) -> float:
        """Where each step's gradient norm is clipped (0: not clipped)."""
        return self.clip_norm

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradient norm at :meth:`clip_grad_norm` (the Trainer's own
        ``gradient_clip_val`` wins when it has one), as the authors' code does."""
        clip = gradient_clip_val or self.clip_grad_norm()
        if clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip,
                gradient_clip_algorithm=gradient_clip_algorithm or "norm",
            )

    def get_effective_lr(self) -> float:
        """``lr``, times the global batch size / 256 with ``scale_lr``."""
        if self.scale_lr:
            return super().get_effective_lr()
        return self.lr

    def build_optimizer(self, params: List[Any], lr: float) -> Optimizer:
        """This protocol's optimiser over ``params`` (parameters or groups)."""
        return build_optimizer(
            self.optimizer_name, params, lr, self.betas, self.weight_decay, self.momentum
        )

    def build_scheduler(self, optimizer: Optimizer) -> StepLR:
        """``lr`` times ``lr_decay`` every ``lr_decay_every`` of the training steps."""
        total_steps = int(self.trainer.estimated_stepping_batches)
        step_size = max(1, round(total_steps * self.lr_decay_every))
        return StepLR(optimizer, step_size, gamma=self.lr_decay)

    def configure_optimizers(  # type: ignore[override]
        self,
    ) -> Tuple[List[Optimizer], List[Dict[str, Any]]]:
        """The optimiser; lr times ``lr_decay`` each ``lr_decay_every`` of training."""
        params = [p for p in self.get_trainable_parameters() if p.requires_grad]
        optimizer = self.build_optimizer(params, self.get_effective_lr())
        scheduler = self.build_scheduler(optimizer)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]
