"""LinearizedBackbone: a frozen backbone plus its first-order expansion in θ2."""

from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._engines import get_engine
from ._fold import fold_batchnorm
from ._graph import _under, split_forward
from ._ntk import ntk_scales
from ._split import SplitSpec, resolve_split
from ._standardize import FeatureStandardization

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _input_size(model: nn.Module, cfg: dict[str, Any]) -> tuple[int, int, int]:
    size = cfg.get("input_size") or getattr(model, "input_size", None)
    return tuple(size) if size else (3, 224, 224)


class LinearizedBackbone(nn.Module):
    """A backbone linearised in its top block(s) θ2, with timm's model interface.

    ``forward(x)`` returns the gradfeat logits ``w1ᵀf(x) + b + ω̄ᵀ J_θ2(x) w2``,
    where ``f`` is the frozen backbone, ``ω̄`` a frozen probe, ``w1``/``b`` the
    trainable head (initialised from ``ω̄``) and ``w2`` the trainable tangents
    (initialised at zero). The JVP is computed by forward-mode AD in the same pass.

    Args:
        model: Backbone whose forward returns pooled ``(B, d)`` features.
        split: Module name(s) forming θ2; ``None`` picks the family default.
        fold_bn: Fold θ2's BatchNorms into their preceding convolutions.
        ntk: Use the NTK parametrisation for θ2 and w2.
        engine: JVP engine name (``auto``, ``func``, ``forward_ad``).
        num_classes: Size of the head; 0 leaves ``forward`` returning pre-logits.
        activation_model: Another backbone that supplies the activations ``f``
            while the JVP comes from ``model``: the paper's ablation, where the
            gradient features of a re-initialised network sit beside the
            pretrained network's activations (Table 1).

    >>> import torch, torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> net.fc = torch.nn.Identity()
    >>> lin = LinearizedBackbone(net, num_classes=10)
    >>> f, jvp = lin.features(torch.randn(2, 3, 64, 64))
    >>> f.shape, jvp.shape, lin(torch.randn(2, 3, 64, 64)).shape
    (torch.Size([2, 512]), torch.Size([2, 512]), torch.Size([2, 10]))
    """

    def __init__(
        self,
        model: nn.Module,
        split: SplitSpec = None,
        fold_bn: bool = True,
        ntk: bool = True,
        engine: str = "auto",
        num_classes: int = 0,
        activation_model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.activation_model = (
            None
            if activation_model is None
            else copy.deepcopy(activation_model).eval().requires_grad_(False)
        )
        model = copy.deepcopy(model).eval().requires_grad_(False)
        self.split = resolve_split(model, split)
        self.folded = fold_batchnorm(model, self.split) if fold_bn else []
        self.engine = engine
        self._engine = get_engine(engine)
        halves = split_forward(model, self.split)
        self.prefix, self.suffix, self.traced = halves.prefix, halves.suffix, halves.traced
        self._theta2 = [
            (n, p) for n, p in self.suffix.named_parameters() if _under(n, self.split)
        ]
        self._tangent_names = [n for n, _ in self._theta2]
        self.tangents = nn.ParameterList(
            nn.Parameter(torch.zeros_like(p)) for _, p in self._theta2
        )
        scales = ntk_scales(self.suffix, self._tangent_names) if ntk else {}
        self._scales = [scales.get(n, 1.0) for n in self._tangent_names]
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        cfg.setdefault("input_size", _input_size(model, cfg))
        cfg.setdefault("mean", IMAGENET_MEAN)
        cfg.setdefault("std", IMAGENET_STD)
        self.pretrained_cfg = cfg
        self.num_features = int(getattr(model, "num_features", 0)) or self._probe_dim()
        self.register_buffer("probe_weight", torch.zeros(0, self.num_features))
        self.standardize = FeatureStandardization(self.num_features).to(
            next(self.suffix.parameters())
        )
        self.head: nn.Module = nn.Identity()
        self.num_classes = 0
        self.reset_classifier(num_classes)

    @torch.no_grad()
    def _probe_dim(self) -> int:
        param = next(self.suffix.parameters())
        x = torch.zeros(1, *self.pretrained_cfg["input_size"], dtype=param.dtype)
        return int(self.suffix(*self.prefix(x)).flatten(1).shape[1])

    def train(self, mode: bool = True) -> "LinearizedBackbone":
        """Set the head's mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.prefix.eval()
        self.suffix.eval()
        if self.activation_model is not None:
            self.activation_model.eval()
        return self

    def named_tangents(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, w2)`` pairs, one per θ2 parameter, named as in the model."""
        return zip(self._tangent_names, self.tangents)

    def named_theta2(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, θ2)`` pairs: the frozen parameters the tangents belong to."""
        return iter(self._theta2)

    def forward_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """θ1's outputs at the θ2 boundary; cacheable, computed without autograd."""
        with torch.no_grad():
            boundary = tuple(self.prefix(x))
            if self.activation_model is not None:
                boundary += (self.activation_model(x).flatten(1),)
            return boundary

    def features_from_prefix(
        self, boundary: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, J·w2)`` from stored θ1 outputs (see :meth:`forward_prefix`)."""
        if self.activation_model is not None:
            *boundary, activations = boundary
        primals = dict(self._theta2)
        tangents = {
            n: t * s if s != 1.0 else t
            for n, t, s in zip(self._tangent_names, self.tangents, self._scales)
        }
        f, jvp = self._engine(self.suffix, tuple(boundary), primals, tangents)
        if self.activation_model is not None:
            f = activations
        # The standardisation is affine, so the JVP of standardised f is J·w2 / std.
        return self.standardize(f.flatten(1)), jvp.flatten(1) / self.standardize.std

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled activations ``f(x)`` and the JVP ``J_θ2(x)·w2``, both ``(B, d)``.

        Both are standardised once ``standardize.set(mean, std)`` was called
        (a fixed affine map before the head; identity by default).
        """
        return self.features_from_prefix(self.forward_prefix(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[f(x), J·w2]`` concatenated along dim 1: ``(B, 2d)``."""
        return torch.cat(self.features(x), dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Gradfeat logits from :meth:`forward_features` output."""
        if pre_logits or self.num_classes == 0:
            return x
        f, jvp = x.split(self.num_features, dim=1)
        return self.head(f) + F.linear(jvp, self.probe_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        """A fresh head; ω̄ is set to the head's initial weights so forward works."""
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        param = next(self.suffix.parameters())
        if num_classes:
            self.head = nn.Linear(self.num_features, num_classes).to(param)
            self.probe_weight = self.head.weight.detach().clone()
        else:
            self.head = nn.Identity()
            self.probe_weight = param.new_zeros(0, self.num_features)

    @torch.no_grad()
    def set_probe(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Install a trained linear probe: ω̄ (frozen) and the initial w1 and bias.

        Args:
            weight: ``(num_classes, num_features)`` probe weight.
            bias: ``(num_classes,)`` probe bias (zeros when omitted).
        """
        if weight.dim() != 2 or weight.shape[1] != self.num_features:
            raise ValueError(
                f"probe weight must be (num_classes, {self.num_features}), "
                f"got {tuple(weight.shape)}"
            )
        if weight.shape[0] != self.num_classes:
            self.reset_classifier(weight.shape[0])
        self.probe_weight = weight.detach().clone().to(self.probe_weight)
        self.head.weight.copy_(weight)
        self.head.bias.copy_(bias if bias is not None else torch.zeros_like(self.head.bias))

    @torch.no_grad()
    def reset_tangents(self) -> None:
        """Set w2 back to zero, so the model equals the linear probe."""
        for t in self.tangents:
            t.zero_()


def linearize(
    model: nn.Module,
    split: SplitSpec = None,
    fold_bn: bool = True,
    ntk: bool = True,
    engine: str = "auto",
    num_classes: int = 0,
    activation_model: nn.Module | None = None,
) -> LinearizedBackbone:
    """Linearise ``model`` in its top block(s): see :class:`LinearizedBackbone`.

    >>> import timm
    >>> lin = linearize(timm.create_model("resnet18", num_classes=0), num_classes=10)
    >>> lin.split
    ['layer4.1']
    """
    return LinearizedBackbone(
        model, split, fold_bn, ntk, engine, num_classes, activation_model
    )
