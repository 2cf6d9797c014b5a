"""The check a linearised backbone runs on itself once, when it is built."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.func import functional_call

from ..errors import GradfeatError
from ._engines import get_engine
from ._ntk import ntk_scales

#: A ``LinearizedBackbone``: the check reads its parts (``prefix``, ``suffix``,
#: tangents and scales) and is called by it, so it does not import it.
Linearized = Any

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
        gradient_error: Largest relative difference of a w2's gradient from
            reverse-mode autodiff of the original model at the documented NTK
            scales, in float64.
    """

    engine: str
    feature_error: float
    adjoint_error: float
    rejected: tuple[tuple[str, str], ...] = ()
    gradient_error: float = 0.0


def _random_like(tensors: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=generator).to(t) for t in tensors]


def _theta2_names(lin: Linearized) -> str:
    return ", ".join(lin.split)


def _scaled(lin: Linearized, tangents: Sequence[torch.Tensor]) -> dict:
    return {
        n: t * s for n, t, s in zip(lin._tangent_names, tangents, lin._scales)
    }


def _try_engine(lin: Linearized, name: str, inputs: tuple) -> None:
    """One JVP and the backward to w2, in the model's own dtype."""
    primals = dict(lin._theta2)
    tangents = [t.detach().requires_grad_() for t in _random_like(lin._theta2_params(), 1)]
    with torch.enable_grad():
        f, jvp = get_engine(name)(lin.suffix, inputs, primals, _scaled(lin, tangents))
        if not bool(torch.isfinite(f).all()):
            return  # non-finite features: the feature check names them
        v = _random_like([jvp], 2)[0]
        (jvp * v).sum().backward()
    unreached = [
        n for n, t in zip(lin._tangent_names, tangents)
        if t.grad is None or not bool(t.grad.ne(0).any())
    ]
    if len(unreached) == len(tangents):
        raise RuntimeError("w2 receives no gradient")
    infinite = [
        n for n, t in zip(lin._tangent_names, tangents)
        if t.grad is not None and not bool(t.grad.isfinite().all())
    ]
    if infinite:
        raise RuntimeError(f"w2's gradient is not finite for {', '.join(infinite[:5])}")
    if unreached:
        warnings.warn(
            f"{len(unreached)} of {len(tangents)} θ2 parameters get no gradient on a "
            "random batch (memoised, unused, or behind an exact zero such as a "
            f"zero-initialised norm scale; their w2 stays zero): "
            f"{', '.join(unreached[:5])}",
            stacklevel=4,
        )


def select_engine(
    lin: Linearized, candidates: Sequence[str], sample: torch.Tensor
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
    lin: Linearized,
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


def _reference_gradients(
    model: torch.nn.Module, sample: torch.Tensor, names: Sequence[str], seed: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``v`` and ``Jᵀv`` for each θ2 parameter, by reverse-mode autodiff of the
    whole (folded) model in float64: a path that shares nothing with the cut,
    the engines or their scales."""
    reference = copy.deepcopy(model).double().eval()
    params = dict(reference.named_parameters())
    leaves = {n: params[n].detach().requires_grad_() for n in names}
    with torch.enable_grad():
        out = functional_call(reference, leaves, (sample.double(),)).flatten(1)
        v = _random_like([out], seed)[0]
        grads = torch.autograd.grad(out, list(leaves.values()), v, allow_unused=True)
    return v, {
        n: torch.zeros_like(leaves[n]) if g is None else g.detach()
        for n, g in zip(names, grads)
    }


def _gradient_check(
    lin: Linearized, model: torch.nn.Module, sample: torch.Tensor
) -> tuple[float, float, list[str], list[str]]:
    """The engine's JVP and w2's gradient against the original model, in float64.

    With ``g = Jᵀv`` from :func:`_reference_gradients` and ``c`` the documented
    NTK scales (:func:`ntk_scales` of the model's own modules), the engine must
    give ``⟨v, J·(c ⊙ w)⟩ = Σ ⟨c ⊙ g, w⟩`` (the adjoint identity) and, by
    backpropagating that through the JVP, a gradient ``c ⊙ g`` for every w2.

    Returns:
        The adjoint error, the largest per-parameter gradient error, the
        parameters whose gradient is off, and those that get none although
        their JVP is not zero.
    """
    names = lin._tangent_names
    v, reference = _reference_gradients(model, sample, names, seed=4)
    documented = ntk_scales(model, names) if lin.ntk else {}
    expected = {n: reference[n] * documented.get(n, 1.0) for n in names}
    prefix, suffix = copy.deepcopy((lin.prefix, lin.suffix))
    prefix.double().eval()
    suffix.double().eval()
    with torch.no_grad():
        inputs = lin._codec.decode(lin._codec.encode(prefix(sample.double())))
    params = dict(suffix.named_parameters())
    primals = {n: params[n] for n in names}
    w = [t.requires_grad_() for t in _random_like([primals[n] for n in names], 3)]
    with torch.enable_grad():
        _, jvp = get_engine(lin.engine)(suffix, inputs, primals, _scaled(lin, w))
        inner = (v * jvp.flatten(1)).sum()
        grads = torch.autograd.grad(inner, w, allow_unused=True)
    forward = float(inner.detach())
    reverse = sum(float((expected[n] * t.detach()).sum()) for n, t in zip(names, w))
    scale = float(v.norm() * jvp.detach().norm())
    adjoint = abs(forward - reverse) / scale if scale > 0.0 else float("inf")
    total = float(torch.sqrt(sum((e * e).sum() for e in expected.values())))
    errors: dict[str, float] = {}
    missing = []
    for n, g in zip(names, grads):
        want = expected[n]
        if g is None or not bool(g.ne(0).any()):
            if float(want.norm()) > 1e-9 * total:
                missing.append(n)
            continue
        difference = float((g - want).norm())
        errors[n] = difference / max(float(want.norm()), 1e-6 * total, 1e-300)
    off = sorted(
        (n for n, e in errors.items() if not e <= ADJOINT_TOLERANCE),
        key=lambda n: -errors[n] if errors[n] == errors[n] else -math.inf,
    )
    worst = max(errors.values(), default=0.0)
    if off and any(errors[n] != errors[n] for n in off):
        worst = math.nan
    return adjoint, worst, off, missing


def verify_linearization(
    lin: Linearized,
    original: torch.nn.Module,
    sample: torch.Tensor,
    folded: torch.nn.Module | None = None,
) -> LinearizationCheck:
    """Check ``lin`` against the model it was built from, on one small batch.

    Args:
        lin: The linearised backbone.
        original: The model as given (its features are the reference for f).
        sample: A small batch at the model's input size.
        folded: ``original`` with θ2's BatchNorms folded as ``lin`` folded them
            (the model whose parameters θ2 names); default ``original``.

    Raises:
        LinearizationError: f differs from the original model's features, the JVP
            is zero for every direction or breaks the adjoint identity, or w2's
            gradient differs from reverse-mode autodiff of the original model at
            the documented NTK scales (a tangent whose JVP is not zero getting no
            gradient included).
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
    adjoint_error, gradient_error, off, missing = _gradient_check(
        lin, original if folded is None else folded, sample
    )
    if missing:
        raise LinearizationError(
            f"{len(missing)} θ2 parameters of θ2 = {_theta2_names(lin)} change the "
            "output but their w2 gets no gradient through the JVP (they would never "
            f"train): {', '.join(missing[:5])}"
        )
    if not (adjoint_error <= ADJOINT_TOLERANCE and gradient_error <= ADJOINT_TOLERANCE):
        worst = f"; worst: {', '.join(off[:5])}" if off else ""
        raise LinearizationError(
            f"the JVP of θ2 = {_theta2_names(lin)} is not exact against reverse-mode "
            "autodiff of the original model at the documented NTK scales: the adjoint "
            f"identity is off by {adjoint_error:.2e} and w2's gradient by "
            f"{gradient_error:.2e} (relative, tolerance {ADJOINT_TOLERANCE:g}{worst}); "
            "choose another --split"
        )
    return LinearizationCheck(
        lin.engine,
        feature_error,
        adjoint_error,
        getattr(lin, "_rejected_engines", ()),
        gradient_error,
    )
