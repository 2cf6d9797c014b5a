"""Protocols as lightly benchmark modules: linear, grad, gradfeat, finetune, knn."""

from ._base import ProtocolClassifier, build_optimizer
from ._cache import CachedInputs, CachePolicy, FrozenOutputs
from ._models import SplitNetwork
from ._registry import (
    ENTRY_POINT_GROUP,
    create_protocol,
    get_protocol_class,
    list_protocols,
    register_protocol,
)
from .finetune import FinetuneClassifier
from .gradfeat import GradfeatClassifier
from .gradient import GradClassifier
from .knn import KNNFeatureClassifier
from .linear import LinearProbeClassifier
from .run import (
    ALL_PROTOCOLS,
    ProtocolResult,
    build_trainer,
    expand_protocols,
    iter_protocols,
    metric_name,
    run_protocols,
)
from .settings import RunSettings, TrainerSettings

__all__ = [
    "ALL_PROTOCOLS",
    "CachePolicy",
    "CachedInputs",
    "ENTRY_POINT_GROUP",
    "FinetuneClassifier",
    "FrozenOutputs",
    "GradClassifier",
    "GradfeatClassifier",
    "KNNFeatureClassifier",
    "LinearProbeClassifier",
    "ProtocolClassifier",
    "ProtocolResult",
    "RunSettings",
    "SplitNetwork",
    "TrainerSettings",
    "build_optimizer",
    "build_trainer",
    "create_protocol",
    "expand_protocols",
    "get_protocol_class",
    "iter_protocols",
    "list_protocols",
    "metric_name",
    "register_protocol",
    "run_protocols",
]
