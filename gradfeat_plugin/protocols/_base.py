"""What every trained protocol shares: tasks, metrics, the paper's optimisers."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from fvcore.common.config import CfgNode
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


def protocol_lr(cfg: CfgNode, key: str | None) -> float:
    """``TRAIN.LR_BY_PROTOCOL.<key>`` when set, else ``TRAIN.LR``.

    >>> from gradfeat_plugin.config import get_cfg
    >>> cfg = get_cfg()
    >>> cfg.TRAIN.LR_BY_PROTOCOL.LINEAR = 0.01
    >>> protocol_lr(cfg, "LINEAR"), protocol_lr(cfg, "GRAD")
    (0.01, 0.001)
    """
    by_protocol = cfg.TRAIN.get("LR_BY_PROTOCOL") or {}
    lr = by_protocol.get(key) if key else None
    return cfg.TRAIN.LR if lr is None else lr


def build_optimizer(
    name: str, params: List[nn.Parameter], lr: float, cfg: CfgNode
) -> Optimizer:
    """The paper's Adam or SGD, with hyperparameters from ``cfg.ADAM`` / ``cfg.SGD``.

    Args:
        name: ``adam`` or ``sgd``.
        params: Parameters to optimise.
        lr: Learning rate (already scaled, if scaling is on).
        cfg: The run's config.
    """
    if name == "adam":
        betas = tuple(cfg.ADAM.BETAS)
        return Adam(params, lr=lr, betas=betas, weight_decay=cfg.ADAM.WEIGHT_DECAY)
    if name == "sgd":
        return SGD(
            params, lr=lr, momentum=cfg.SGD.MOMENTUM, weight_decay=cfg.SGD.WEIGHT_DECAY
        )
    raise GradfeatError(f"unknown optimizer {name!r}; use adam or sgd")


class ProtocolClassifier(BaseClassifier):
    """A lightly ``BaseClassifier`` that knows the task, the optimiser and the cache.

    Subclasses override ``forward`` and ``get_trainable_parameters`` as in lightly,
    and call :meth:`freeze_all_but_trainable` at the end of ``__init__``. Inputs
    are images or, when ``cached``, the precomputed tensors named by the class's
    ``cache`` attribute (``"features"``: pooled ``f``; ``"boundary"``: θ1's outputs).

    Args:
        model: The module the protocol is built around.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config (optimiser, learning rate, batch size, schedule).
        feature_dim: Size of the features the classification head reads.
        task: ``multiclass`` (cross-entropy, top-1/top-5) or ``multilabel``
            (binary cross-entropy, mAP).
        cached: Inputs are precomputed tensors instead of images.
        optimizer: ``adam`` or ``sgd``; ``None`` takes ``cfg.TRAIN.OPTIMIZER``.
        batch_size_per_device: Per-process batch size, used for lr scaling;
            ``None`` takes ``cfg.TRAIN.BATCH_SIZE``.
    """

    #: Which precomputed inputs the protocol consumes when ``cached``.
    cache: str = "boundary"
    #: Whether the head reads standardised features (see ``set_standardization``).
    standardizes_features: bool = True
    #: Whether the protocol needs a trained linear probe ω̄ (see ``set_probe``).
    needs_probe: bool = False
    #: Its key in ``TRAIN.LR_BY_PROTOCOL`` (``None``: always ``TRAIN.LR``).
    lr_key: str | None = None

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        cfg: CfgNode,
        feature_dim: int,
        task: str = "multiclass",
        cached: bool = False,
        optimizer: str | None = None,
        batch_size_per_device: int | None = None,
    ) -> None:
        check_task(task)
        super().__init__(
            model=model,
            batch_size_per_device=batch_size_per_device or cfg.TRAIN.BATCH_SIZE,
            lr=protocol_lr(cfg, self.lr_key),
            feature_dim=feature_dim,
            num_classes=num_classes,
            topk=tuple(sorted({1, min(5, num_classes)})),
        )
        self.cfg = cfg
        self.task = task
        self.cached = cached
        self.optimizer_name = optimizer or cfg.TRAIN.OPTIMIZER
        if task == "multilabel":
            self.criterion = nn.BCEWithLogitsLoss()
            self.val_map = MultilabelAveragePrecision(num_labels=num_classes)

    @property
    def metric_name(self) -> str:
        """The validation metric a result reports: ``val_top1`` or ``val_map``."""
        return "val_map" if self.task == "multilabel" else "val_top1"

    @classmethod
    def optimizer_names(cls, cfg: CfgNode) -> List[str]:
        """The optimisers a run tries; the best validation metric is reported."""
        return [cfg.TRAIN.OPTIMIZER]

    @classmethod
    def can_cache(cls, cfg: CfgNode) -> bool:
        """Whether the protocol can read stored θ1 outputs under ``cfg``."""
        return True

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
        """Seed the epoch from ``TRAIN.SEED`` and the epoch number.

        The shuffle of the epoch then depends on nothing else: not on how often a
        Trainer validates or whether it runs a sanity check (each DataLoader pass
        draws a random number), so ``run_protocols`` and a user's own Trainer see
        the same batches.
        """
        torch.manual_seed(epoch_seed(int(self.cfg.TRAIN.SEED), self.current_epoch))

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
        """Where each step's gradient norm is clipped: ``TRAIN.CLIP_GRAD_NORM``."""
        return float(self.cfg.TRAIN.get("CLIP_GRAD_NORM", 0.0))

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
        """The protocol's learning rate (``TRAIN.LR_BY_PROTOCOL`` or ``TRAIN.LR``),
        times global batch size / 256 when ``TRAIN.SCALE_LR``."""
        if self.cfg.TRAIN.SCALE_LR:
            return super().get_effective_lr()
        return self.lr

    def configure_optimizers(  # type: ignore[override]
        self,
    ) -> Tuple[List[Optimizer], List[Dict[str, Any]]]:
        """The optimiser; lr times ``LR_DECAY`` each ``LR_DECAY_EVERY`` of training."""
        params = [p for p in self.get_trainable_parameters() if p.requires_grad]
        optimizer = build_optimizer(
            self.optimizer_name, params, self.get_effective_lr(), self.cfg
        )
        total_steps = int(self.trainer.estimated_stepping_batches)
        step_size = max(1, round(total_steps * self.cfg.TRAIN.LR_DECAY_EVERY))
        scheduler = StepLR(optimizer, step_size, gamma=self.cfg.TRAIN.LR_DECAY)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]
