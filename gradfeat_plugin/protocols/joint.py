"""``grad`` and ``gradfeat`` trained side by side in one pass over the data."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Tuple

from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer

from ..errors import ProtocolFailed
from ..linearize.backbone import check_shared_expansion, joint_features_from_prefix
from ._base import ProtocolClassifier
from .gradfeat import GradfeatClassifier
from .linear import LinearProbeClassifier


#: Per-step training metrics the shared pass does not log: each log call costs
#: Lightning about as much as a small model's step, and no result reads them (a
#: member's non-finite loss is caught in its ``training_step``, not from its log).
_UNLOGGED_IN_TRAINING = ("train_loss", "train_top1", "train_top5")


class JointLinearModels(LightningModule):
    """Several linear models over one linearised network, trained in one pass.

    The members (the settings of ``grad`` and ``gradfeat``: a learning-rate sweep,
    or the two protocols) expand the same network around the same probe and read
    the same cached θ1 outputs, so each batch runs θ2's primal forward once and
    carries every member's tangents w2 along it
    (:func:`~gradfeat_plugin.linearize.backbone.joint_features_from_prefix`); or
    they are linear probes (a sweep of ``linear``) reading the same stored
    features. The
    members stay the models they are when trained alone: same initialisation, same
    batches (one loader, seeded per epoch as a protocol seeds it), their own loss
    and logging (under ``NAME/``; per-step training accuracies left out), and one
    optimiser whose parameter groups are the members' (Adam and SGD act per
    parameter, weight decay included; no gradient clipping; the loss is the sum of
    the members' losses, whose parameters are disjoint, so each gets its own
    gradient).

    A member whose logits are non-finite or whose loss diverges is dropped from
    then on, with its :class:`ProtocolFailed` kept in :attr:`failures`; the others
    go on training. When every member has failed, the last failure is raised.

    Args:
        members: Protocol name -> a constructed, probe-initialised cached member.
    """

    def __init__(self, members: Dict[str, GradfeatClassifier]) -> None:
        super().__init__()
        first = next(iter(members.values()))
        if not all(m.cached for m in members.values()):
            raise ValueError("joint training reads cached θ1 outputs only")
        settings = {
            (m.optimizer_name, m.betas, m.weight_decay, m.momentum, m.lr_decay,
             m.lr_decay_every, m.seed)
            for m in members.values()
        }
        if len(settings) != 1:
            raise ValueError(
                "joint training needs one optimiser, schedule and seed for every member"
            )
        if any(m.clip_grad_norm() for m in members.values()):
            # Clipping the norm of the summed gradient would couple the models.
            raise ValueError("joint training does not clip gradients")
        self.expands = all(isinstance(m, GradfeatClassifier) for m in members.values())
        probes = all(isinstance(m, LinearProbeClassifier) for m in members.values())
        if not (self.expands or probes):
            raise ValueError("joint training takes linear probes, or grad and gradfeat")
        if self.expands and not check_shared_expansion([m.model for m in members.values()]):
            raise ValueError("the members do not expand the same network")
        self.members = nn.ModuleDict(members)
        self.seed = first.seed
        self.failures: Dict[str, ProtocolFailed] = {}

    def _active(self) -> List[Tuple[str, GradfeatClassifier]]:
        return [(n, m) for n, m in self.members.items() if n not in self.failures]

    def setup(self, stage: str) -> None:
        # The members read the step, epoch and world size from the Trainer.
        for member in self.members.values():
            member.trainer = self.trainer

    def on_train_epoch_start(self) -> None:
        ProtocolClassifier.on_train_epoch_start(self)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _as_member(
        self, prefix: str, member: GradfeatClassifier, logits: Tensor
    ) -> Iterator[None]:
        """Let ``member`` run its own step on logits computed here, logging through
        this module under ``prefix/``."""

        def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
            if name not in _UNLOGGED_IN_TRAINING or not self.training:
                self.log(f"{prefix}/{name}", value, *args, **kwargs)

        member.forward = lambda inputs: logits  # type: ignore[method-assign]
        member.log = log  # type: ignore[method-assign]
        try:
            yield
        finally:
            del member.forward, member.log

    def _steps(self, batch: Tuple[Any, ...], step: str, batch_idx: int) -> List[Tensor]:
        """Each active member's ``training_step``/``validation_step`` on shared logits."""
        active = self._active()
        if self.expands:
            features = joint_features_from_prefix([m.model for _, m in active], batch[0])
            logits = [m.logits_from_features(f, j) for (_, m), (f, j) in zip(active, features)]
        else:  # linear probes read the stored features as they are
            logits = [member(batch[0]) for _, member in active]
        losses = []
        for (name, member), member_logits in zip(active, logits):
            with self._as_member(name, member, member_logits):
                try:
                    losses.append(getattr(member, step)(batch, batch_idx))
                except ProtocolFailed as exc:
                    self.failures[name] = exc
        return losses

    def training_step(self, batch: Tuple[Any, ...], batch_idx: int) -> Tensor:
        losses = self._steps(batch, "training_step", batch_idx)
        if not losses:
            raise list(self.failures.values())[-1]
        return sum(losses[1:], losses[0])

    def validation_step(self, batch: Tuple[Any, ...], batch_idx: int) -> None:
        if self._active():
            self._steps(batch, "validation_step", batch_idx)

    def member_metrics(self, metrics: Dict[str, float], name: str) -> Dict[str, float]:
        """The metrics ``name`` logged, without its prefix."""
        prefix = f"{name}/"
        return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}

    def configure_optimizers(  # type: ignore[override]
        self,
    ) -> Tuple[List[Optimizer], List[Dict[str, Any]]]:
        """The members' optimiser and schedule (see ``ProtocolClassifier``), one
        parameter group per member."""
        groups = []
        for member in self.members.values():
            params = [p for p in member.get_trainable_parameters() if p.requires_grad]
            groups.append({"params": params, "lr": member.get_effective_lr()})
        first = next(iter(self.members.values()))
        optimizer = first.build_optimizer(groups, groups[0]["lr"])
        scheduler = first.build_scheduler(optimizer)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]
