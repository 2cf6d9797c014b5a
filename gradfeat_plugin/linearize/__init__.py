"""The linearisation engine: θ2 resolution, BN folding, NTK scaling, JVP engines."""

from ._engines import ENGINES, get_engine
from ._fold import fold_batchnorm
from ._graph import SplitForward, split_forward
from ._ntk import ntk_scales
from ._reinit import reinitialize
from ._split import default_split, resolve_split
from ._standardize import FeatureStandardization
from .backbone import LinearizedBackbone, linearize

__all__ = [
    "ENGINES",
    "FeatureStandardization",
    "LinearizedBackbone",
    "SplitForward",
    "default_split",
    "fold_batchnorm",
    "get_engine",
    "linearize",
    "ntk_scales",
    "reinitialize",
    "resolve_split",
    "split_forward",
]
