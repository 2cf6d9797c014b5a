"""Split a backbone's forward at the θ2 boundary with torch.fx.

The prefix computes everything that does not depend on θ2 (θ1's work) and returns
the tensors the θ2 part consumes; the suffix runs θ2 and the pooling from those
tensors. Caching the prefix's outputs lets every epoch skip θ1 entirely. Models that
``torch.fx`` cannot trace fall back to an empty prefix and the full model as suffix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
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
        graph = _BackboneTracer().trace(model)
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
