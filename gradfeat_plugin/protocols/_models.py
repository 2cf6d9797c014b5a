"""The networks protocols wrap: a linearised backbone, or θ1 + a trainable θ2."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from ..linearize import (
    LinearizedBackbone,
    fold_batchnorm,
    linearize,
    reinitialize,
    resolve_split,
    split_forward,
)
from ..linearize._graph import BoundaryCodec
from ..linearize._split import SplitSpec
from ..linearize._stateful import bypass_eval_caches, keep_computing
from ..linearize.backbone import _input_size


def linearized_from(
    model: nn.Module,
    split: SplitSpec = None,
    fold_bn: bool = True,
    ntk: bool = True,
    engine: str = "auto",
    random_theta1: bool = False,
    random_theta2: bool = False,
    seed: int = 0,
    init: str = "default",
) -> LinearizedBackbone:
    """A private :class:`LinearizedBackbone` of ``model``.

    Args:
        model: A backbone (forward returns ``(B, d)``) or an already linearised one,
            which is copied.
        split: θ2 module name(s); ``None`` picks the family default.
        fold_bn: Fold θ2's BatchNorms into their convolutions.
        ntk: NTK parametrisation of θ2 and w2.
        engine: The JVP engine.
        random_theta1: Take the gradient term through a re-initialised θ1 (the
            paper's Table 1 ablation; activations stay the pretrained network's).
        random_theta2: The same for θ2.
        seed: Seeds the re-initialisation.
        init: How a random θ2 is drawn: ``default`` or ``ntk`` (see
            :func:`~gradfeat_plugin.linearize.reinitialize`); a random θ1 always
            takes its layers' initialisers.
    """
    if isinstance(model, LinearizedBackbone):
        return copy.deepcopy(model)
    random_parts = [
        part for part, on in (("theta1", random_theta1), ("theta2", random_theta2)) if on
    ]
    gradient_model, activation_model = model, None
    if random_parts:
        names = resolve_split(model, split)
        for part in random_parts:
            part_init = init if part == "theta2" else "default"
            gradient_model = reinitialize(gradient_model, names, part, seed, part_init)
        activation_model = model
    return linearize(
        gradient_model,
        split,
        fold_bn=fold_bn,
        ntk=ntk,
        engine=engine,
        activation_model=activation_model,
    )


@torch.no_grad()
def install_probe(
    model: LinearizedBackbone,
    weight: Tensor,
    bias: Tensor | None,
    random_probe: bool = False,
    seed: int = 0,
    init: str = "default",
) -> None:
    """Set ω̄ and the initial head from a trained probe, and w2 to zero.

    With ``random_probe`` the gradient term uses a fresh random ω (seeded by
    ``seed``) while the head still starts from the trained probe, as in the paper's
    Table 1. ``init`` says how ω is drawn: ``default``, as ``nn.Linear``'s weight
    (uniform in ±1/√d); ``ntk``, as the authors' ``NTKLinear.init()``: the
    effective weight ``√(1/num_classes)·N(0, 1)``.
    """
    model.set_probe(weight, bias)
    model.reset_tangents()
    if random_probe:
        generator = torch.Generator().manual_seed(seed)
        if init == "ntk":
            scale = 1.0 / len(weight) ** 0.5
            random = scale * torch.randn(weight.shape, generator=generator)
        else:
            bound = 1.0 / model.num_features**0.5
            random = torch.rand(weight.shape, generator=generator) * 2 * bound - bound
        model.probe_weight.copy_(random)


class SplitNetwork(nn.Module):
    """A copy of a backbone cut at θ2: frozen θ1 (eval mode) and trainable θ2.

    The prefix is the same function as a :class:`LinearizedBackbone`'s prefix, so
    the θ1 outputs it caches feed this network too. θ2 keeps its BatchNorms and
    runs them in training mode when the module trains, unless ``fold_bn`` folds
    them into their convolutions first (the same function as the eval-mode
    network, with no BatchNorm left in θ2).

    Args:
        model: The backbone; it is copied, never modified.
        split: θ2 module name(s); ``None`` picks the family default.
        frozen_prefix: Keep θ1 in eval mode (False when the whole network trains).
        fold_bn: Fold θ2's BatchNorms into the convolutions before them.
    """

    def __init__(
        self,
        model: nn.Module,
        split: SplitSpec = None,
        frozen_prefix: bool = True,
        fold_bn: bool = False,
    ) -> None:
        super().__init__()
        self.frozen_prefix = frozen_prefix
        model = copy.deepcopy(model).eval()
        # θ2 changes every step, so nothing may be memoised from its parameters.
        self._cache_owners = bypass_eval_caches(model)
        self.split = resolve_split(model, split)
        self.folded = fold_batchnorm(model, self.split) if fold_bn else []
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
