"""The check a linearised backbone runs on itself once, when it is built."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch.func import functional_call

from ..errors import GradfeatError
from ._engines import get_engine

if TYPE_CHECKING:
    from .backbone import LinearizedBackbone

#: Largest relative difference between the linearised model's f and the original's.
FEATURE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
#: Largest adjoint-identity error, |⟨v, J·w⟩ − ⟨Jᵀv, w⟩| / (‖v‖‖J·w‖), in float64.
ADJOINT_TOLERANCE = 1e-6


class LinearizationError(GradfeatError):
    """The JVP of θ2 cannot be computed exactly for this model and split."""


@dataclass(frozen=True)
class LinearizationCheck:
    """What the self-check measured.

    Attributes:
        engine: The JVP engine that passed.
        feature_error: Relative difference of f from the original model's output.
        adjoint_error: The adjoint identity's error in float64.
        rejected: Engines tried before, each with the reason it failed.
    """

    engine: str
    feature_error: float
    adjoint_error: float
    rejected: tuple[tuple[str, str], ...] = ()


def _random_like(tensors: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=generator).to(t) for t in tensors]


def _theta2_names(lin: "LinearizedBackbone") -> str:
    return ", ".join(lin.split)


def _scaled(lin: "LinearizedBackbone", tangents: Sequence[torch.Tensor]) -> dict:
    return {
        n: t * s for n, t, s in zip(lin._tangent_names, tangents, lin._scales)
    }


def _try_engine(lin: "LinearizedBackbone", name: str, inputs: tuple) -> None:
    """One JVP and the backward to w2, in the model's own dtype."""
    primals = dict(lin._theta2)
    tangents = [t.detach().requires_grad_() for t in _random_like(lin._theta2_params(), 1)]
    with torch.enable_grad():
        _, jvp = get_engine(name)(lin.suffix, inputs, primals, _scaled(lin, tangents))
        v = _random_like([jvp], 2)[0]
        (jvp * v).sum().backward()
    unreached = [
        n for n, t in zip(lin._tangent_names, tangents)
        if t.grad is None or not bool(t.grad.ne(0).any())
    ]
    if len(unreached) == len(tangents):
        raise RuntimeError("w2 receives no gradient")
    if unreached:
        warnings.warn(
            f"{len(unreached)} of {len(tangents)} θ2 parameters get no gradient on a "
            "random batch (memoised, unused, or behind an exact zero such as a "
            f"zero-initialised norm scale; their w2 stays zero): "
            f"{', '.join(unreached[:5])}",
            stacklevel=4,
        )


def select_engine(
    lin: "LinearizedBackbone", candidates: Sequence[str], sample: torch.Tensor
) -> str:
    """The first engine in ``candidates`` that computes the JVP and its gradient.

    Falling back past the first is reported with a warning (but not from ``dual``
    to ``func``, the same formula).

    Raises:
        LinearizationError: None of them works.
    """
    inputs = lin._suffix_inputs(lin.forward_prefix(sample))
    rejected: list[tuple[str, str]] = []
    for name in candidates:
        try:
            _try_engine(lin, name, inputs)
        except (RuntimeError, NotImplementedError) as exc:
            rejected.append((name, str(exc).splitlines()[0][:200]))
            continue
        # ``dual`` is ``func``'s formula with fewer convolutions: falling back
        # from it to ``func`` changes nothing a user needs to hear about.
        if any(n != "dual" for n, _ in rejected):
            warnings.warn(
                f"JVP engine {name!r} chosen for θ2 = {_theta2_names(lin)}: "
                + "; ".join(f"{n} failed ({why})" for n, why in rejected),
                stacklevel=3,
            )
        lin._rejected_engines = tuple(rejected)
        return name
    raise LinearizationError(
        f"cannot compute the JVP of θ2 = {_theta2_names(lin)}: "
        + "; ".join(f"{n}: {why}" for n, why in rejected)
    )


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny))


@torch.no_grad()
def _feature_error(
    lin: "LinearizedBackbone",
    original: torch.nn.Module,
    sample: torch.Tensor,
    boundary: tuple,
) -> float:
    was_training = original.training
    original.eval()
    try:
        reference = original(sample).flatten(1)
    finally:
        original.train(was_training)
    return _relative(lin.suffix(*boundary).flatten(1), reference)


def _adjoint_error(lin: "LinearizedBackbone", boundary: tuple) -> float:
    """|⟨v, J·w⟩ − ⟨Jᵀv, w⟩| relative to ‖v‖‖J·w‖, with J·w from the engine and
    Jᵀv from reverse-mode autodiff of the plain forward, both in float64."""
    suffix = copy.deepcopy(lin.suffix).double()
    inputs = tuple(
        b.double() if isinstance(b, torch.Tensor) and b.is_floating_point() else b
        for b in boundary
    )
    names = lin._tangent_names
    params = dict(suffix.named_parameters())
    primals = {n: params[n] for n in names}
    tangents = _scaled(lin, _random_like([primals[n] for n in names], 3))
    with torch.no_grad():
        _, jvp = get_engine(lin.engine)(suffix, inputs, primals, tangents)
    v = _random_like([jvp], 4)[0]
    leaves = {n: p.detach().requires_grad_() for n, p in primals.items()}
    with torch.enable_grad():
        out = functional_call(suffix, leaves, inputs)
        grads = torch.autograd.grad(out, list(leaves.values()), v, allow_unused=True)
    forward = float((v * jvp).detach().sum())
    reverse = sum(
        float((g * tangents[n]).sum()) for n, g in zip(leaves, grads) if g is not None
    )
    scale = float(v.norm() * jvp.norm())
    if scale == 0.0:  # θ2 does not reach the output along a random direction
        return float("inf")
    return abs(forward - reverse) / scale


def verify_linearization(
    lin: "LinearizedBackbone", original: torch.nn.Module, sample: torch.Tensor
) -> LinearizationCheck:
    """Check ``lin`` against the model it was built from, on one small batch.

    Raises:
        LinearizationError: f differs from the original model's features, the JVP
            is zero for every direction, or it breaks the adjoint identity.
    """
    dtype = next(lin.suffix.parameters()).dtype
    boundary = lin._suffix_inputs(lin.forward_prefix(sample))
    feature_error = _feature_error(lin, original, sample, boundary)
    if math.isnan(feature_error):
        raise LinearizationError(
            "the backbone's features are non-finite (NaN or Inf) on a random batch; "
            "check its weights"
        )
    tolerance = FEATURE_TOLERANCE.get(dtype, 1e-2)
    if not feature_error <= tolerance:
        raise LinearizationError(
            f"the linearised model's features differ from the original's by "
            f"{feature_error:.2e} (relative, tolerance {tolerance:g}) with θ2 = "
            f"{_theta2_names(lin)}"
        )
    adjoint_error = _adjoint_error(lin, boundary)
    if not adjoint_error <= ADJOINT_TOLERANCE:
        raise LinearizationError(
            f"the JVP of θ2 = {_theta2_names(lin)} is not exact: the adjoint "
            f"identity is off by {adjoint_error:.2e} (tolerance {ADJOINT_TOLERANCE:g}); "
            "choose another --split"
        )
    return LinearizationCheck(
        lin.engine, feature_error, adjoint_error, getattr(lin, "_rejected_engines", ())
    )
