"""``finetune``: θ2 and the head trained nonlinearly (optionally the whole network)."""

from __future__ import annotations

from typing import Any, List, Sequence

import torch
from torch import Tensor, nn

from ..errors import GradfeatError
from ..linearize import LinearizedBackbone, resolve_split
from ..linearize._split import SplitSpec
from ._base import Inputs, ProtocolClassifier, check_feature_dim
from ._models import SplitNetwork
from .gradfeat import whole_module_split

#: Where the fine-tuning head starts.
HEAD_INITS = ("random", "zero", "probe")


class FinetuneClassifier(ProtocolClassifier):
    """Fine-tuning: θ2 (the top block(s)) and a linear head, θ1 frozen in eval mode.

    Arguments as lightly's ``FinetuneClassifier``, then plain keywords: θ1 stays
    frozen in eval mode, the gradient norm is clipped at ``clip_grad_norm`` (10, as
    in the authors' code), and the paper's Adam is the default optimiser. The paper
    reports the better of an Adam and an SGD run; ``run_protocols`` trains one
    instance per optimiser.

    Args:
        model: A backbone whose forward returns ``(B, d)`` (copied), or a whole SSL
            module (θ2 found in ``model.backbone``).
        batch_size_per_device: Per-process batch size (for ``scale_lr``).
        lr: Learning rate.
        feature_dim: ``d``; checked against the model when given.
        num_classes: Number of classes (labels, for multi-label tasks).
        topk: Top-k accuracies to log.
        split: θ2 module name(s); default: the top block.
        whole_network: Train every parameter, θ1 included (inputs are then images).
        clip_grad_norm: Clip each step's gradient norm at this value (0: off).
        head_init: ``random`` (``nn.Linear``'s initialisation, the paper's start),
            ``zero`` (weight and bias 0: every logit starts equal) or ``probe``: the
            head starts from a linear probe installed with
            :meth:`set_probe` before training (linear probing then fine-tuning,
            Kumar et al. 2022; ``run_protocols`` installs the probe it chose).
        fold_bn: Fine-tune θ2 with its BatchNorms folded into the convolutions
            before them (their eval-mode statistics): the same function at the
            start, no BatchNorm while training, as the authors' code fine-tunes.
            False keeps them, in training mode.
        **kwargs: ``task``, ``cached``, ``optimizer``, ``betas``, ``weight_decay``,
            ``momentum``, ``scale_lr``, ``lr_decay``, ``lr_decay_every``, ``seed``:
            see :class:`ProtocolClassifier`.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> import torch
    >>> model = FinetuneClassifier(BiGANEncoder(width=8), 64, num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

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
        whole_network: bool = False,
        clip_grad_norm: float = 10.0,
        head_init: str = "random",
        fold_bn: bool = False,
        **kwargs: Any,
    ) -> None:
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
        arguments = dict(locals(), **kwargs)
        if isinstance(model, LinearizedBackbone):
            raise ValueError("finetune needs the original backbone, not a linearised")
        self.whole_network = bool(whole_network)
        if self.whole_network and kwargs.get("cached"):
            raise GradfeatError(
                "FINETUNE.WHOLE_NETWORK trains θ1 too, so its outputs cannot be "
                "cached; set TRAIN.CACHE_FEATURES False"
            )
        split = resolve_split(model, whole_module_split(model, split))
        network = SplitNetwork(
            model, split, frozen_prefix=not self.whole_network, fold_bn=fold_bn
        )
        dim = network.num_features or _feature_dim(network, model)
        check_feature_dim(feature_dim, dim)
        super().__init__(
            network,
            batch_size_per_device,
            lr,
            dim,
            num_classes,
            topk,
            clip_grad_norm=clip_grad_norm,
            **kwargs,
        )
        self.freeze_all_but_trainable()
        self.head_init = head_init
        if head_init == "zero":
            with torch.no_grad():
                for param in self.classification_head.parameters():
                    param.zero_()
        self.register_buffer("head_from_probe", torch.tensor(False))
        arguments.update(split=list(network.split), feature_dim=dim)
        self.save_arguments(arguments, "kwargs")

    # Fine-tuning moves the features, so its head reads them unstandardised.
    standardizes_features = False

    @classmethod
    def can_cache(cls, **kwargs: Any) -> bool:
        """θ1's outputs are fixed unless the whole network trains."""
        return not kwargs.get("whole_network", False)

    @torch.no_grad()
    def set_probe(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Start the head from a linear probe of the backbone's raw pooled features
        (fold a standardisation into it first: ``W/s`` and ``b − (W/s)·m``)."""
        self.classification_head.weight.copy_(weight)
        if bias is not None:
            self.classification_head.bias.copy_(bias)
        self.head_from_probe.fill_(True)

    def on_train_start(self) -> None:
        """Refuse to start a ``head_init="probe"`` run without its probe."""
        if self.head_init == "probe" and not bool(self.head_from_probe):
            raise ValueError(
                "head_init='probe' needs set_probe(weight, bias) before training "
                "(run_protocols installs the linear probe it chose)"
            )

    def forward(self, images: Inputs) -> Tensor:
        if self.cached:
            features = self.model.forward_suffix(images)
        else:
            features = self.model.forward_suffix(self.model.forward_prefix(images))
        return self.classification_head(features)

    def get_trainable_parameters(self) -> List[nn.Parameter]:
        backbone = (
            list(self.model.parameters()) if self.whole_network else self.model.theta2()
        )
        return [*backbone, *self.classification_head.parameters()]


@torch.no_grad()
def _feature_dim(network: SplitNetwork, model: nn.Module) -> int:
    """Pooled feature size of a backbone without ``num_features`` (one eval pass)."""
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    size = pretrained_cfg.get("input_size", (3, 224, 224))
    param = next(network.parameters())
    return int(network.eval()(param.new_zeros(2, *size)).shape[1])
