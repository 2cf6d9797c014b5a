"""JVP engines: compute ``(f(x), J_θ2(x)·t)`` for the suffix in one forward pass."""

from __future__ import annotations

import contextlib
import functools
import warnings
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


def _composite_normalize(
    input: torch.Tensor,
    p: float = 2.0,
    dim: int = 1,
    eps: float = 1e-12,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.normalize`` for ``p=2`` with a norm whose derivatives stay finite at 0.

    At a zero vector (Swin-V2's cosine attention on padded window tokens) the
    forward-mode rule of the norm is masked to 0, but differentiating it again
    for w2's gradient gives ``0/0``; the double ``where`` keeps every branch finite.
    """
    if p != 2 or out is not None:
        return F.normalize(input, p, dim, eps, out)
    squares = (input * input).sum(dim, keepdim=True)
    nonzero = squares > 0
    norm = torch.where(nonzero, torch.where(nonzero, squares, 1.0).sqrt(), 0.0)
    return input / norm.clamp_min(eps).expand_as(input)


class _DifferentiableActivations(TorchFunctionMode):
    """Runs functions whose forward-mode derivative cannot itself be differentiated
    (w2's gradient needs that) as compositions of ones that can: ``hardsigmoid``
    as ``relu6(x + 3) / 6`` (``aten::hardsigmoid_backward`` has no derivative) and
    ``normalize`` with a norm that is smooth at zero."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return _composite_hardsigmoid(*args, **kwargs)
        if func is F.normalize:
            return _composite_normalize(*args, **kwargs)
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


@functools.cache
def _load_jvp_decompositions() -> None:
    """Load forward-mode AD's decompositions once, quietly: torch scripts them on
    first use with ``torch.jit.script``, which warns that it is deprecated (torch's
    own call, nothing a user can act on)."""
    import torch.autograd.forward_ad as fwAD

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"`torch\.jit\.script` is deprecated", FutureWarning
        )
        # Private, hence looked up: a torch without it has nothing to load here.
        getattr(fwAD, "_maybe_load_decompositions", lambda: None)()


@contextlib.contextmanager
def jvp_context() -> Iterator[None]:
    """Kernels with a forward-mode derivative: math attention, no MHA fast path,
    a composite hard sigmoid."""
    _load_jvp_decompositions()
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

    with _forward_ad_enabled(), jvp_context(), fwAD.dual_level():
        duals = {n: fwAD.make_dual(primals[n], tangents[n]) for n in tangents}
        out = functional_call(suffix, duals, inputs)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:
        tangent = torch.zeros_like(primal)
    return primal, tangent


@contextlib.contextmanager
def _forward_ad_enabled() -> Iterator[None]:
    """Leave inference mode (Lightning validates in it), which turns forward AD
    off: dual tensors would carry no tangent and the JVP would read as zero.
    Without autograd recording, so that no inference tensor is saved."""
    if not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


#: Functions bilinear in (input, weight) + bias whose JVP :class:`_BilinearJVP` forms.
_BILINEAR = (F.conv1d, F.conv2d, F.conv3d, F.linear)


def _bias_view(bias: torch.Tensor, out: torch.Tensor, func: Callable) -> torch.Tensor:
    """``bias`` shaped to broadcast over ``out`` (channels at dim 1 for convolutions)."""
    if func is F.linear:
        return bias
    return bias.view(-1, *([1] * (out.dim() - 2)))


class _BilinearJVP(TorchFunctionMode):
    """Forms the JVP of convolutions and linear layers under ``forward_ad`` itself.

    ``J(x, W)·(ẋ, Ẇ) = f(ẋ, W) + f(x, Ẇ, ḃ)``, the formula autograd uses, but a
    term whose tangent is absent is skipped: autograd would run a convolution on
    a materialised zero tangent (the input of θ2's first layers carries none),
    a third of a JVP's convolutions on a conv-BN-ReLU block. Over several tangent
    sets (:meth:`replaying`) the primal output of each call is computed on the
    first pass and reused by the next, so θ2's primal forward runs once.
    """

    def __init__(self, record: bool = False) -> None:
        super().__init__()
        self._record = record
        self._outputs: list[torch.Tensor] = []
        self._replay = False
        self._index = 0

    def replaying(self) -> "_BilinearJVP":
        """Reuse the recorded primal outputs from now on (a pass of another set)."""
        self._replay, self._index = True, 0
        return self

    def _primal(self, func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        # The model may change an output in place (``x += shortcut``, an in-place
        # ReLU), so the record is a copy, and each replay gets a fresh copy of it.
        if not self._replay:
            out = func(*args, **kwargs)
            if self._record:
                self._outputs.append(out.clone())
            return out
        out = self._outputs[self._index].clone()
        self._index += 1
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = dict(kwargs or {})
        if func not in _BILINEAR:
            return func(*args, **kwargs)
        import torch.autograd.forward_ad as fwAD

        args = list(args)
        x = args.pop(0) if args else kwargs.pop("input")
        weight = args.pop(0) if args else kwargs.pop("weight")
        bias = args.pop(0) if args else kwargs.pop("bias", None)
        x_p, x_t = fwAD.unpack_dual(x)
        w_p, w_t = fwAD.unpack_dual(weight)
        b_p, b_t = fwAD.unpack_dual(bias) if bias is not None else (None, None)
        out = self._primal(func, (x_p, w_p, b_p, *args), kwargs)
        terms = []
        if x_t is not None:
            terms.append(func(x_t, w_p, None, *args, **kwargs))
        if w_t is not None:
            terms.append(func(x_p, w_t, b_t, *args, **kwargs))
        elif b_t is not None:
            terms.append(_bias_view(b_t, out, func).expand_as(out).clone())
        if not terms:
            return out
        tangent = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        return fwAD.make_dual(out, tangent)


def dual_engine_sets(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangent_sets: list[Params],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(f, [J·t for t in tangent_sets])``: :func:`dual_engine` over several tangent
    sets, θ2's convolutions and linear layers running their primal once."""
    import torch.autograd.forward_ad as fwAD

    bilinear = _BilinearJVP(record=len(tangent_sets) > 1)
    primal, jvps = None, []
    for index, tangents in enumerate(tangent_sets):
        mode = bilinear if index == 0 else bilinear.replaying()
        with _forward_ad_enabled(), jvp_context(), fwAD.dual_level(), mode:
            duals = {n: fwAD.make_dual(primals[n], tangents[n]) for n in tangents}
            out = functional_call(suffix, duals, inputs)
            out_p, tangent = fwAD.unpack_dual(out)
        primal = out_p if primal is None else primal
        jvps.append(torch.zeros_like(out_p) if tangent is None else tangent)
    assert primal is not None
    return primal, jvps


def dual_engine(
    suffix: nn.Module,
    inputs: tuple[Any, ...],
    primals: Params,
    tangents: Params,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-mode AD with ``forward_ad`` dual tensors, convolutions and linear
    layers differentiated by :class:`_BilinearJVP` (no zero-tangent convolutions).

    The same mathematics as :func:`func_engine`, with fewer convolutions.
    """
    primal, (tangent,) = dual_engine_sets(suffix, inputs, primals, [tangents])
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
    "dual": dual_engine,
    "func": func_engine,
    "forward_ad": forward_ad_engine,
    "func_no_onednn": func_no_onednn_engine,
    "reverse": reverse_engine,
}

#: Engines ``torch.func.vmap`` can batch over a stack of tangent sets.
VMAP_ENGINES = ("func", "func_no_onednn")

#: Engines that take several tangent sets at once (see ``dual_engine_sets``).
SET_ENGINES: dict[str, Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]] = {
    "dual": dual_engine_sets,
}

#: What ``auto`` tries, in order, until one computes the JVP and its gradient.
AUTO_ENGINES = ("dual", "func", "func_no_onednn", "reverse")


def get_engine(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Look up a JVP engine by name (``auto`` means the first of :data:`AUTO_ENGINES`)."""
    if name == "auto":
        name = AUTO_ENGINES[0]
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: auto, {', '.join(ENGINES)}")
    return ENGINES[name]
