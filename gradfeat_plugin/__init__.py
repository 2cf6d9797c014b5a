"""gradfeat-plugin: gradients as features for lightly's benchmark suite."""

from .linearize import LinearizedBackbone, default_split, linearize, resolve_split

__version__ = "0.1.0"

__all__ = [
    "LinearizedBackbone",
    "default_split",
    "linearize",
    "resolve_split",
]
