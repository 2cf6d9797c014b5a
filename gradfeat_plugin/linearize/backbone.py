"""LinearizedBackbone: a frozen backbone plus its first-order expansion in θ2."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.func import vmap
from torch.nn import functional as F

from ._engines import AUTO_ENGINES, SET_ENGINES, VMAP_ENGINES, get_engine
from ._fold import fold_batchnorm
from ._graph import BoundaryCodec, _under, split_forward
from ._ntk import (
    NTKLinear,
    effective_parameters,
    ntk_scales,
    set_effective_parameters,
)
from ._split import SplitSpec, resolve_split
from ._standardize import FeatureStandardization
from ._stateful import bypass_eval_caches, keep_computing
from ._verify import select_engine, verify_linearization

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _built_image_size(model: nn.Module) -> tuple[int, int] | None:
    """The ``(H, W)`` a model says it was built for: its own ``img_size`` or that
    of its first patch embedding (timm's ``create_model(img_size=...)`` leaves it
    out of ``pretrained_cfg``)."""
    for _, module in model.named_modules():
        value = getattr(module, "img_size", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return (int(value[0]), int(value[1]))
    return None


def _input_size(model: nn.Module, cfg: dict[str, Any]) -> tuple[int, ...]:
    size = tuple(cfg.get("input_size") or getattr(model, "input_size", None) or (3, 224, 224))
    built_for = _built_image_size(model)
    if built_for is not None and len(size) == 3:
        size = (size[0], *built_for)
    # A model built with in_chans=1 keeps timm's 3-channel pretrained_cfg. The
    # model's own in_chans comes first: TResNet's first conv follows a
    # space-to-depth step and reads 16 times the channels.
    channels = getattr(model, "in_chans", None)
    if not isinstance(channels, int) or isinstance(channels, bool):
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = None if first_conv is None else first_conv.in_channels
    if channels is not None and len(size) == 3:
        size = (channels, *size[1:])
    return size


def _warn_unseen(
    model: nn.Module, split: list[str], folded: list[tuple[str, str]], seen: list[str]
) -> None:
    """Warn about θ2 parameters the traced forward never reads (a value memoised
    from them at trace time, or an unused layer): their w2 would stay zero."""
    norms = [norm for _, norm in folded]
    unseen = [
        n
        for n, _ in model.named_parameters()
        if _under(n, split) and n not in seen and not _under(n, norms)
    ]
    if unseen:
        warnings.warn(
            f"{len(unseen)} θ2 parameters never reach the output and get no "
            f"tangent (memoised or unused): {', '.join(unseen[:5])}",
            stacklevel=3,
        )


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
        engine: JVP engine name (``auto``, ``dual``, ``func``, ``forward_ad``, ...).
        num_classes: Size of the head; 0 leaves ``forward`` returning pre-logits.
        activation_model: Another backbone that supplies the activations ``f``
            while the JVP comes from ``model``: the paper's ablation, where the
            gradient features of a re-initialised network sit beside the
            pretrained network's activations (Table 1). When the two share θ1
            (only θ2 was re-initialised), ``f`` is computed from the same θ1
            outputs by the activation model's own θ2, so the boundary, and any
            cache of it, is the pretrained network's.
        input_size: ``(C, H, W)`` of the images it will see; default: the
            model's ``pretrained_cfg``. The self-check runs at this size.
        verify: Check the linearisation once, on a small random batch: ``f``
            equals the original model's features, the JVP agrees with
            reverse-mode autodiff (the adjoint identity, in float64) and its
            gradient exists in the model's dtype. With ``engine="auto"`` the
            first engine that passes is used (:attr:`engine` says which). A
            failure raises :class:`LinearizationError` naming θ2.

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
        verify: bool = True,
        input_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.activation_model = (
            None
            if activation_model is None
            else copy.deepcopy(activation_model).eval().requires_grad_(False)
        )
        original = model
        model = copy.deepcopy(model).eval().requires_grad_(False)
        self._cache_owners = bypass_eval_caches(model)
        self.split = resolve_split(model, split)
        self.folded = fold_batchnorm(model, self.split) if fold_bn else []
        halves = split_forward(model, self.split)
        self.prefix, self.suffix, self.traced = halves.prefix, halves.suffix, halves.traced
        self._codec = BoundaryCodec()
        self._theta2 = [
            (n, p) for n, p in self.suffix.named_parameters() if _under(n, self.split)
        ]
        self.activation_suffix = self._shared_prefix_suffix(original)
        self._tangent_names = [n for n, _ in self._theta2]
        _warn_unseen(model, self.split, self.folded, self._tangent_names)
        self.tangents = nn.ParameterList(
            nn.Parameter(torch.zeros_like(p)) for _, p in self._theta2
        )
        # The scales come from the model's own modules: in the traced suffix a
        # weight that the model uses functionally (F.linear(x, self.qkv.weight))
        # is a get_attr on a plain Module, no longer inside its nn.Linear.
        scales = ntk_scales(model, self._tangent_names) if ntk else {}
        self._scales = [scales.get(n, 1.0) for n in self._tangent_names]
        self.ntk = ntk
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        cfg["input_size"] = tuple(input_size) if input_size else _input_size(model, cfg)
        cfg.setdefault("mean", IMAGENET_MEAN)
        cfg.setdefault("std", IMAGENET_STD)
        self.pretrained_cfg = cfg
        sample = self._sample_input()
        candidates = AUTO_ENGINES if engine == "auto" else (engine,)
        if verify:
            self.engine = select_engine(self, candidates, sample)
        else:
            get_engine(candidates[0])
            self.engine = candidates[0]
        self._engine = get_engine(self.engine)
        # The width of the real pooled output: timm's num_features is the width
        # before a pre-logits layer (head_hidden_size) on some families.
        self.num_features = self._probe_dim(sample)
        self.check = (
            verify_linearization(self, original, sample, folded=model) if verify else None
        )
        self.register_buffer("probe_weight", torch.zeros(0, self.num_features))
        self.standardize = FeatureStandardization(self.num_features).to(
            next(self.suffix.parameters())
        )
        self.head: nn.Module = nn.Identity()
        self.num_classes = 0
        # An NTK-parametrised head (NTKLinear) instead of nn.Linear; set it before
        # reset_classifier.
        self.ntk_head = False
        self.reset_classifier(num_classes)

    def _shared_prefix_suffix(self, original: nn.Module) -> nn.Module | None:
        """The activation model's θ2 side, when it shares θ1 with ``original``.

        It then replaces :attr:`activation_model`: ``f`` comes from the same θ1
        outputs as the JVP, through the activation model's θ2.
        """
        if self.activation_model is None:
            return None
        # θ1 is everything outside θ2; θ2's entries may differ even in name (a
        # re-initialised θ2 whose BatchNorms were folded).
        theirs, ours = (
            {k: v for k, v in m.state_dict().items() if not _under(k, self.split)}
            for m in (self.activation_model, original)
        )
        if theirs.keys() != ours.keys() or not all(
            torch.equal(theirs[k], ours[k]) for k in ours
        ):
            return None
        model = self.activation_model
        self.activation_model = None
        return split_forward(model, self.split).suffix.eval()

    def _sample_input(self) -> torch.Tensor:
        """Two seeded random images at the model's input size, dtype and device."""
        param = next(self.suffix.parameters())
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, *self.pretrained_cfg["input_size"], generator=generator)
        return x.to(param)

    @torch.no_grad()
    def _probe_dim(self, sample: torch.Tensor) -> int:
        # Two batch sizes show which Python values at the cut follow the batch.
        self.forward_prefix(sample)
        boundary = self.forward_prefix(torch.cat([sample, sample[:1]]))
        return int(self.activations_from_prefix(boundary).shape[1])

    def train(self, mode: bool = True) -> "LinearizedBackbone":
        """Set the head's mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.prefix.eval()
        self.suffix.eval()
        keep_computing(self._cache_owners)
        if self.activation_model is not None:
            self.activation_model.eval()
        if self.activation_suffix is not None:
            self.activation_suffix.eval()
        return self

    def named_tangents(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, w2)`` pairs, one per θ2 parameter, named as in the model."""
        return zip(self._tangent_names, self.tangents)

    def _theta2_params(self) -> list[nn.Parameter]:
        return [p for _, p in self._theta2]

    def named_theta2(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, θ2)`` pairs: the frozen parameters the tangents belong to."""
        return iter(self._theta2)

    def forward_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """θ1's outputs at the θ2 boundary: tensors only, cacheable, no autograd.

        Python values the cut passes along (sizes, flags) are kept by the model
        as constants of the input size, not returned.
        """
        with torch.no_grad():
            boundary = self._codec.encode(self.prefix(x))
            if self.activation_model is not None:
                boundary += (self.activation_model(x).flatten(1),)
            return boundary

    def _suffix_inputs(self, boundary: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        """The suffix's arguments from :meth:`forward_prefix`'s tensors."""
        if self.activation_model is not None:
            boundary = boundary[:-1]
        return self._codec.decode(boundary)

    @torch.no_grad()
    def activations_from_prefix(self, boundary: Sequence[torch.Tensor]) -> torch.Tensor:
        """The pooled activations ``f`` alone (no JVP, not standardised)."""
        if self.activation_model is not None:
            return boundary[-1]
        suffix = self.suffix if self.activation_suffix is None else self.activation_suffix
        return suffix(*self._codec.decode(boundary)).flatten(1)

    def _engine_tangents(self) -> dict[str, torch.Tensor]:
        """w2 as the engine reads it: each tangent times its NTK scale."""
        return {
            n: t * s if s != 1.0 else t
            for n, t, s in zip(self._tangent_names, self.tangents, self._scales)
        }

    def _standardized(
        self, f: torch.Tensor, jvp: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The standardisation is affine, so the JVP of standardised f is J·w2 / std.
        return self.standardize(f.flatten(1)), jvp.flatten(1) / self.standardize.std

    def features_from_prefix(
        self, boundary: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, J·w2)`` from stored θ1 outputs (see :meth:`forward_prefix`)."""
        if self.activation_model is not None:
            *boundary, activations = boundary
        primals = dict(self._theta2)
        inputs = self._codec.decode(boundary)
        f, jvp = self._engine(self.suffix, inputs, primals, self._engine_tangents())
        if self.activation_model is not None:
            f = activations
        elif self.activation_suffix is not None:
            with torch.no_grad():
                f = self.activation_suffix(*inputs)
        return self._standardized(f, jvp)

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
            head_cls = NTKLinear if self.ntk_head else nn.Linear
            self.head = head_cls(self.num_features, num_classes).to(param)
            self.probe_weight = effective_parameters(self.head)[0].detach().clone()
        else:
            self.head = nn.Identity()
            self.probe_weight = param.new_zeros(0, self.num_features)

    @torch.no_grad()
    def set_probe(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Install a trained linear probe: ω̄ (frozen) and the initial w1 and bias.

        ``weight`` and ``bias`` are those of the function the probe computes (an
        NTK head's effective ones); an NTK head is set to compute the same.

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
        set_effective_parameters(self.head, weight, bias)

    @torch.no_grad()
    def reset_tangents(self) -> None:
        """Set w2 back to zero, so the model equals the linear probe."""
        for t in self.tangents:
            t.zero_()


def joint_features_from_prefix(
    backbones: Sequence[LinearizedBackbone], boundary: Sequence[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each backbone's ``features_from_prefix(boundary)``, sharing one primal pass.

    The backbones are linearisations of the same network at the same point (same
    suffix and θ2 values, and the same activation suffix when a re-initialised θ2
    takes the gradient term; :func:`check_shared_expansion` says whether they are)
    and differ only in their tangents w2 and standardisation. The JVP is linear in
    w2: the ``dual`` engine computes θ2's convolutions and linear layers once and
    only the tangent terms per set; the ``func`` engines stack the tangents and run
    once under ``torch.func.vmap``. Either way the backward of a sum of the sets'
    losses gives each w2 its own gradient. Other engines (``reverse``) run once
    per set. The pretrained activations of an ablated θ2 are computed once.

    Args:
        backbones: The linearised backbones.
        boundary: θ1's outputs, as :meth:`LinearizedBackbone.forward_prefix` gives.
    """
    first = backbones[0]
    primals = dict(first._theta2)
    inputs = first._suffix_inputs(boundary)
    sets = [b._engine_tangents() for b in backbones]
    if first.engine in SET_ENGINES:
        f, jvps = SET_ENGINES[first.engine](first.suffix, inputs, primals, sets)
    elif first.engine not in VMAP_ENGINES or len(backbones) == 1:
        return [b.features_from_prefix(boundary) for b in backbones]
    else:
        stacked = {n: torch.stack([t[n] for t in sets]) for n in sets[0]}

        def one(tangents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return first._engine(first.suffix, inputs, primals, tangents)

        f, jvps = vmap(one, out_dims=(None, 0))(stacked)
    if first.activation_model is not None:
        f = boundary[-1]
    elif first.activation_suffix is not None:
        with torch.no_grad():
            f = first.activation_suffix(*inputs)
    return [b._standardized(f, jvp) for b, jvp in zip(backbones, jvps)]


def equal_modules(a: nn.Module | None, b: nn.Module | None) -> bool:
    """Both absent, or the same entries with equal values."""
    if a is None or b is None:
        return a is b
    ours, theirs = a.state_dict(), b.state_dict()
    return ours.keys() == theirs.keys() and all(
        torch.equal(ours[k], theirs[k]) for k in ours
    )


def check_shared_expansion(backbones: Sequence[LinearizedBackbone]) -> bool:
    """Whether :func:`joint_features_from_prefix` can serve these backbones: the
    same engine, θ2 (and its NTK scales) equal, and equal activation suffixes (an
    ablated θ2 drawn with the same seed) and activation models (an ablated θ1; the
    boundary then carries its features), or none."""
    first = backbones[0]
    for other in backbones:
        if other.engine != first.engine:
            return False
        if not equal_modules(other.activation_model, first.activation_model):
            return False
        if not equal_modules(other.activation_suffix, first.activation_suffix):
            return False
        if other._tangent_names != first._tangent_names or other._scales != first._scales:
            return False
        pairs = zip(other._theta2, first._theta2)
        if not all(torch.equal(p, q) for (_, p), (_, q) in pairs):
            return False
    return True


def linearize(
    model: nn.Module,
    split: SplitSpec = None,
    fold_bn: bool = True,
    ntk: bool = True,
    engine: str = "auto",
    num_classes: int = 0,
    activation_model: nn.Module | None = None,
    verify: bool = True,
    input_size: Sequence[int] | None = None,
) -> LinearizedBackbone:
    """Linearise ``model`` in its top block(s): see :class:`LinearizedBackbone`.

    >>> import timm
    >>> lin = linearize(timm.create_model("resnet18", num_classes=0), num_classes=10)
    >>> lin.split
    ['layer4.1']
    """
    return LinearizedBackbone(
        model, split, fold_bn, ntk, engine, num_classes, activation_model, verify,
        input_size,
    )
