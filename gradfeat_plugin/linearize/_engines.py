"""JVP engines: compute ``(f(x), J_θ2(x)·t)`` for the suffix in one forward pass."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

Params = dict[str, torch.Tensor]


class JVPEngine(Protocol):
    def __call__(
        self,
        suffix: nn.Module,
        inputs: tuple[Any, ...],
        primals: Params,
        tangents: Params,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _composite_hardsigmoid(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


class _DifferentiableActivations(TorchFunctionMode):
    """Runs ``hardsigmoid`` as ``relu6(x + 3) / 6``: the same function, but its
    forward-mode derivative can itself be differentiated (w2's gradient needs that;
    ``aten::hardsigmoid_backward`` has no derivative)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return _composite_hardsigmoid(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    # nn.MultiheadAttention's fused eval path (aten::_native_multi_head_attention)
    # has no forward-mode derivative.
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@contextlib.contextmanager
def jvp_context() -> Iterator[None]:
    """Kernels with a forward-mode derivative: math attention, no MHA fast path,
    a composite hard sigmoid."""
    with sdpa_kernel([SDPBackend.MATH]), _mha_fastpath_off(), _DifferentiableActivations():
        yield


def func_engine(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode AD with ``torch.func.jvp`` over ``functional_call``.

    Only θ2's parameters carry tangents, so everything before θ2 inside the suffix
    runs as a plain forward; the output tangent stays differentiable with respect to
    ``tangents``, which is how w2 receives its gradient.
    """

    def run(params: Params) -> torch.Tensor:
        return functional_call(suffix, params, inputs)

    with jvp_context():
        return jvp(run, (primals,), (tangents,))


def forward_ad_engine(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode AD with ``torch.autograd.forward_ad`` dual tensors.

    The same mathematics as :func:`func_engine` without functorch's transform
    machinery: parameters are swapped for dual tensors for one call.
    """
    import torch.autograd.forward_ad as fwAD

    with jvp_context(), fwAD.dual_level():
        duals = {n: fwAD.make_dual(primals[n], tangents[n]) for n in tangents}
        out = functional_call(suffix, duals, inputs)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:
        tangent = torch.zeros_like(primal)
    return primal, tangent


def func_no_onednn_engine(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`func_engine` with oneDNN (mkldnn) kernels off.

    oneDNN's CPU recurrent layers (``mkldnn_rnn_layer``) have no forward-mode
    derivative; the native ones do. Slower convolutions on the CPU, so only a
    fallback.
    """
    with torch.backends.mkldnn.flags(enabled=False):
        return func_engine(suffix, inputs, primals, tangents)


def reverse_engine(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The JVP from two reverse passes, for ops with no forward-mode derivative.

    ``g(u) = Jᵀu`` is linear in ``u``, so ``J·t = ∂⟨g(u), t⟩/∂u``; built with
    ``create_graph`` the result stays differentiable in ``t``. About three
    forward-equivalents more than :func:`func_engine`, so only a fallback.
    """
    with torch.enable_grad(), jvp_context():
        leaves = {n: primals[n].detach().requires_grad_() for n in tangents}
        out = functional_call(suffix, {**primals, **leaves}, inputs)
        u = torch.zeros_like(out, requires_grad=True)
        grads = torch.autograd.grad(
            out, list(leaves.values()), u, create_graph=True, allow_unused=True
        )
        inner = sum(
            (g * tangents[n]).sum() for n, g in zip(leaves, grads) if g is not None
        )
        if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
            return out.detach(), torch.zeros_like(out)
        (tangent,) = torch.autograd.grad(inner, u, create_graph=True)
    return out.detach(), tangent


ENGINES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "func": func_engine,
    "forward_ad": forward_ad_engine,
    "func_no_onednn": func_no_onednn_engine,
    "reverse": reverse_engine,
}

#: Engines ``torch.func.vmap`` can batch over a stack of tangent sets.
VMAP_ENGINES = ("func", "func_no_onednn")

#: What ``auto`` tries, in order, until one computes the JVP and its gradient.
AUTO_ENGINES = ("func", "func_no_onednn", "reverse")


def get_engine(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Look up a JVP engine by name (``auto`` means the first of :data:`AUTO_ENGINES`)."""
    if name == "auto":
        name = AUTO_ENGINES[0]
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: auto, {', '.join(ENGINES)}")
    return ENGINES[name]
