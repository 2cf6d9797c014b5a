"""The networks protocols wrap: a linearised backbone, or θ1 + a trainable θ2."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from ..errors import GradfeatError
from ..linearize import (
    LinearizedBackbone,
    linearize,
    reinitialize,
    resolve_split,
    split_forward,
)
from ..linearize._graph import BoundaryCodec
from ..linearize._split import SplitSpec
from ..linearize._stateful import bypass_eval_caches, keep_computing
from ..linearize.backbone import _input_size


def split_from(split: SplitSpec, cfg: CfgNode) -> SplitSpec:
    """``split`` if given, else ``cfg.MODEL.SPLIT``, else ``None`` (family default)."""
    return split or list(cfg.MODEL.SPLIT) or None


def linearized_from(
    model: nn.Module, split: SplitSpec, cfg: CfgNode
) -> LinearizedBackbone:
    """A private :class:`LinearizedBackbone` of ``model`` built as ``cfg.MODEL`` says.

    Args:
        model: A backbone (forward returns ``(B, d)``) or an already linearised one,
            which is copied.
        split: θ2 module name(s); ``None`` uses ``cfg.MODEL.SPLIT`` or the default.
        cfg: The run's config.
    """
    if isinstance(model, LinearizedBackbone):
        return copy.deepcopy(model)
    split = split_from(split, cfg)
    random_parts = ablated_parts(cfg)
    gradient_model, activation_model = model, None
    if random_parts:
        names = resolve_split(model, split)
        for part in random_parts:
            gradient_model = reinitialize(gradient_model, names, part, cfg.TRAIN.SEED)
        activation_model = model
    return linearize(
        gradient_model,
        split,
        fold_bn=cfg.MODEL.FOLD_BN,
        ntk=cfg.MODEL.NTK,
        engine=cfg.MODEL.ENGINE,
        activation_model=activation_model,
    )


def _ablation_setting(cfg: CfgNode, key: str) -> bool:
    value = cfg.ABLATION[key]
    if value not in ("pretrained", "random"):
        raise GradfeatError(f"ABLATION.{key} must be pretrained or random, got {value!r}")
    return value == "random"


def ablated_parts(cfg: CfgNode) -> list[str]:
    """The parts of the network (``theta1``, ``theta2``) the ablation re-initialises."""
    return [part for part in ("theta1", "theta2") if _ablation_setting(cfg, part.upper())]


@torch.no_grad()
def install_probe(
    model: LinearizedBackbone, weight: Tensor, bias: Tensor | None, cfg: CfgNode
) -> None:
    """Set ω̄ and the initial head from a trained probe, and w2 to zero.

    With ``ABLATION.PROBE = random`` the gradient term uses a fresh random ω
    (``nn.Linear``'s initialisation, seeded by ``TRAIN.SEED``) while the head
    still starts from the trained probe, as in the paper's Table 1.
    """
    model.set_probe(weight, bias)
    model.reset_tangents()
    if _ablation_setting(cfg, "PROBE"):
        generator = torch.Generator().manual_seed(cfg.TRAIN.SEED)
        bound = 1.0 / model.num_features**0.5
        random = torch.rand(weight.shape, generator=generator) * 2 * bound - bound
        model.probe_weight.copy_(random)


class SplitNetwork(nn.Module):
    """A copy of a backbone cut at θ2: frozen θ1 (eval mode) and trainable θ2.

    The prefix is the same function as a :class:`LinearizedBackbone`'s prefix, so
    the θ1 outputs it caches feed this network too. θ2 keeps its BatchNorms and
    runs them in training mode when the module trains.

    Args:
        model: The backbone; it is copied, never modified.
        split: θ2 module name(s); ``None`` picks the family default.
        frozen_prefix: Keep θ1 in eval mode (False when the whole network trains).
    """

    def __init__(
        self, model: nn.Module, split: SplitSpec = None, frozen_prefix: bool = True
    ) -> None:
        super().__init__()
        self.frozen_prefix = frozen_prefix
        model = copy.deepcopy(model).eval()
        # θ2 changes every step, so nothing may be memoised from its parameters.
        self._cache_owners = bypass_eval_caches(model)
        self.split = resolve_split(model, split)
        halves = split_forward(model, self.split)
        self.prefix, self.suffix = halves.prefix, halves.suffix
        self.prefix.requires_grad_(not frozen_prefix)
        self._codec = BoundaryCodec()
        self.num_features = self._probe_dim(model)

    @torch.no_grad()
    def _probe_dim(self, model: nn.Module) -> int:
        """The pooled width, from batches of two sizes (which also teach the codec
        the Python values θ1 hands θ2)."""
        size = _input_size(model, dict(getattr(model, "pretrained_cfg", None) or {}))
        param = next(self.suffix.parameters())
        out = None
        for batch in (2, 3):
            x = torch.zeros(batch, *size).to(param)
            out = self.forward_suffix(self._codec.encode(self.prefix(x)))
        return int(out.shape[1])

    def train(self, mode: bool = True) -> "SplitNetwork":
        """Set the mode; a frozen θ1 always stays in eval mode."""
        super().train(mode)
        if self.frozen_prefix:
            self.prefix.eval()
        keep_computing(self._cache_owners)
        return self

    def theta2(self) -> list[nn.Parameter]:
        """θ2's parameters (the suffix may also hold frozen layers after θ2)."""
        return [
            p
            for n, p in self.suffix.named_parameters()
            if any(n == s or n.startswith(s + ".") for s in self.split)
        ]

    def forward_suffix(self, boundary: Sequence[Tensor]) -> Tensor:
        """Pooled features from θ1's outputs (the tensors ``forward_prefix`` gives)."""
        return self.suffix(*self._codec.decode(boundary)).flatten(1)

    def forward_prefix(self, x: Tensor) -> tuple[Tensor, ...]:
        """θ1's outputs at the θ2 boundary, tensors only."""
        return self._codec.encode(self.prefix(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_suffix(self.forward_prefix(x))
