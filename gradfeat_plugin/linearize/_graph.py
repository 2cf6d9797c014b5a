"""Split a backbone's forward at the θ2 boundary with torch.fx.

The prefix computes everything that does not depend on θ2 (θ1's work) and returns
the tensors the θ2 part consumes; the suffix runs θ2 and the pooling from those
tensors. Caching the prefix's outputs lets every epoch skip θ1 entirely. Models that
``torch.fx`` cannot trace fall back to an empty prefix and the full model as suffix.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.utils._pytree as pytree
from torch import fx, nn


class _BackboneTracer(fx.Tracer):
    """An fx tracer that keeps timm's untraceable modules and functions as leaves."""

    def __init__(self) -> None:
        try:
            from timm.layers import get_notrace_functions, get_notrace_modules

            self._leaf_types = tuple(get_notrace_modules())
            autowrap = tuple(get_notrace_functions())
        except ImportError:  # timm is a dependency, but the engine needs none of it
            self._leaf_types, autowrap = (), ()
        super().__init__(autowrap_functions=autowrap)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def trace_images(self, model: nn.Module) -> fx.Graph:
        """Trace ``model(images)``: optional arguments keep their defaults, so a
        ``mask=None`` takes the branch a plain call takes."""
        parameters = list(inspect.signature(model.forward).parameters.values())[1:]
        concrete = {
            p.name: p.default
            for p in parameters
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        return self.trace(model, concrete_args=concrete or None)


def _under(target: str, names: list[str]) -> bool:
    return any(n == "" or target == n or target.startswith(n + ".") for n in names)


def _touches(target: str, names: list[str]) -> bool:
    """A call_module/get_attr target that owns or lies inside a θ2 module."""
    return _under(target, names) or any(n.startswith(target + ".") for n in names)


@dataclass
class SplitForward:
    """The two halves of a backbone's forward.

    Attributes:
        prefix: Module mapping images to the tuple of boundary tensors.
        suffix: Module mapping the boundary tensors to pooled features; its
            parameter names are those of the original model.
        traced: False when tracing failed and the prefix is the identity.
    """

    prefix: nn.Module
    suffix: nn.Module
    traced: bool


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def split_forward(model: nn.Module, split: list[str]) -> SplitForward:
    """Cut ``model``'s forward where θ2 (the modules named in ``split``) begins.

    Args:
        model: The backbone (its forward takes one image batch).
        split: θ2 module names, as returned by :func:`resolve_split`.

    Returns:
        A :class:`SplitForward`; parameter names of the suffix match ``model``'s.
    """
    try:
        graph = _BackboneTracer().trace_images(model)
    except Exception as exc:  # any tracing failure means: run the whole model
        warnings.warn(
            f"torch.fx cannot trace {type(model).__name__} ({exc.__class__.__name__}); "
            "θ1 outputs will not be cached and each step runs the full forward",
            stacklevel=2,
        )
        return SplitForward(_Identity(), model, traced=False)

    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    dep_theta2: set[fx.Node] = set()
    dep_input: set[fx.Node] = set(placeholders[:1])
    for node in nodes:
        if node.op in ("call_module", "get_attr") and _touches(node.target, split):
            dep_theta2.add(node)
        for inp in node.all_input_nodes:
            if inp in dep_theta2:
                dep_theta2.add(node)
            if inp in dep_input:
                dep_input.add(node)
    output = next(n for n in nodes if n.op == "output")
    if output not in dep_theta2:
        raise ValueError(f"the model's output does not depend on split {split}")

    boundary: list[fx.Node] = []
    for node in nodes:
        if node in dep_theta2:
            for inp in node.all_input_nodes:
                if inp in dep_input and inp not in dep_theta2 and inp not in boundary:
                    boundary.append(inp)

    prefix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node.op != "output" and node not in dep_theta2:
            env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[b] for b in boundary))

    suffix_graph = fx.Graph()
    senv: dict[fx.Node, fx.Node] = {}
    for i, b in enumerate(boundary):
        senv[b] = suffix_graph.placeholder(f"boundary_{i}")
    for node in nodes:
        if node in senv or node is placeholders[0]:
            continue
        if node in dep_theta2 or node not in dep_input:
            senv[node] = suffix_graph.node_copy(node, lambda n: senv[n])
    return SplitForward(
        _pruned(model, prefix_graph, "ThetaOnePrefix"),
        _pruned(model, suffix_graph, "ThetaTwoSuffix"),
        traced=True,
    )


def _pruned(model: nn.Module, graph: fx.Graph, name: str) -> fx.GraphModule:
    module = fx.GraphModule(model, graph, class_name=name)
    module.graph.eliminate_dead_code()
    module.recompile()
    module.delete_all_unused_submodules()
    return module


class BoundaryCodec:
    """Splits θ1's outputs into tensors, which can be cached, and constants.

    A cut may hand θ2 Python values besides tensors (DaViT passes its batch size,
    height and width as ints). Only the tensors are returned for caching; the
    other values are remembered by the per-item shapes of the tensors they came
    with and put back in place before the suffix runs. A value that follows the
    batch size (seen at two batch sizes) is filled in from the batch at hand.
    """

    def __init__(self) -> None:
        # per-item shapes -> (tree spec, constants by leaf index, batch size seen,
        # indices of the leaves that are the batch size)
        self._layouts: dict[tuple, tuple[object, dict[int, object], int, set[int]]] = {}

    @staticmethod
    def _key(tensors: tuple[torch.Tensor, ...]) -> tuple:
        return tuple(tuple(t.shape[1:]) for t in tensors)

    @staticmethod
    def _batch(tensors: Sequence[torch.Tensor]) -> int:
        return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 0

    def encode(self, outputs: object) -> tuple[torch.Tensor, ...]:
        """The tensors among ``outputs`` (any nesting); the rest is remembered."""
        leaves, spec = pytree.tree_flatten(outputs)
        tensors = tuple(leaf for leaf in leaves if isinstance(leaf, torch.Tensor))
        constants = {
            i: leaf for i, leaf in enumerate(leaves) if not isinstance(leaf, torch.Tensor)
        }
        key, batch = self._key(tensors), self._batch(tensors)
        batch_slots: set[int] = set()
        if key in self._layouts:
            _, seen, seen_batch, batch_slots = self._layouts[key]
            if seen_batch != batch:
                batch_slots = batch_slots | {
                    i
                    for i, value in constants.items()
                    if value == batch and seen.get(i) == seen_batch
                }
        self._layouts[key] = (spec, constants, batch, batch_slots)
        return tensors

    def decode(self, tensors: Sequence[torch.Tensor]) -> tuple[object, ...]:
        """The suffix's arguments from the tensors :meth:`encode` returned."""
        tensors = tuple(tensors)
        layout = self._layouts.get(self._key(tensors))
        if layout is None:
            if any(constants for _, constants, _, _ in self._layouts.values()):
                raise ValueError(
                    "θ1's outputs have shapes "
                    f"{[tuple(t.shape) for t in tensors]} that this model has not "
                    "computed; run forward_prefix at this input size first"
                )
            return tensors
        spec, constants, seen_batch, batch_slots = layout
        batch = self._batch(tensors)
        if batch != seen_batch and any(
            i not in batch_slots and value == seen_batch for i, value in constants.items()
        ):
            raise ValueError(
                f"θ1's outputs pass the batch size {seen_batch} as a constant; "
                "run forward_prefix on a batch of this size first"
            )
        pieces = iter(tensors)
        leaves = [
            (batch if i in batch_slots else constants[i]) if i in constants else next(pieces)
            for i in range(spec.num_leaves)
        ]
        return tuple(pytree.tree_unflatten(leaves, spec))
