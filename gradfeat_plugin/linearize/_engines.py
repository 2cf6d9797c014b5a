"""JVP engines: compute ``(f(x), J_θ2(x)·t)`` for the suffix in one forward pass."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

Params = dict[str, torch.Tensor]


class JVPEngine(Protocol):
    def __call__(
        self,
        suffix: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        primals: Params,
        tangents: Params,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _jvp_capable_attention() -> object:
    # The fused attention kernels have no forward-mode derivative; the math one does.
    return sdpa_kernel([SDPBackend.MATH])


def func_engine(
    suffix: nn.Module,
    inputs: tuple[torch.Tensor, ...],
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

    with _jvp_capable_attention():
        return jvp(run, (primals,), (tangents,))


def forward_ad_engine(
    suffix: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode AD with ``torch.autograd.forward_ad`` dual tensors.

    The same mathematics as :func:`func_engine` without functorch's transform
    machinery: parameters are swapped for dual tensors for one call.
    """
    import torch.autograd.forward_ad as fwAD

    with _jvp_capable_attention(), fwAD.dual_level():
        duals = {n: fwAD.make_dual(primals[n], tangents[n]) for n in tangents}
        out = functional_call(suffix, duals, inputs)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:
        tangent = torch.zeros_like(primal)
    return primal, tangent


ENGINES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "func": func_engine,
    "forward_ad": forward_ad_engine,
}


def get_engine(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Look up a JVP engine by name; ``auto`` picks the fastest that applies."""
    if name == "auto":
        name = "func"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: auto, {', '.join(ENGINES)}")
    return ENGINES[name]
