"""The linearisation engine: θ2 resolution, BN folding, NTK scaling, JVP engines."""

from ._engines import AUTO_ENGINES, ENGINES, get_engine
from ._fold import fold_batchnorm
from ._graph import SplitForward, split_forward
from ._ntk import NTKLinear, ntk_scales
from ._reinit import reinitialize
from ._split import (
    SplitCandidate,
    default_split,
    resolve_split,
    split_candidates,
    split_warnings,
)
from ._verify import LinearizationCheck, LinearizationError
from ._standardize import FeatureStandardization
from .backbone import LinearizedBackbone, linearize

__all__ = [
    "AUTO_ENGINES",
    "ENGINES",
    "LinearizationCheck",
    "LinearizationError",
    "SplitCandidate",
    "split_candidates",
    "FeatureStandardization",
    "LinearizedBackbone",
    "NTKLinear",
    "SplitForward",
    "default_split",
    "fold_batchnorm",
    "get_engine",
    "linearize",
    "ntk_scales",
    "reinitialize",
    "resolve_split",
    "split_forward",
    "split_warnings",
]
