"""Protocols as lightly benchmark modules: linear, grad, gradfeat, finetune, knn."""

from ._base import ProtocolClassifier, build_optimizer
from ._cache import CachedInputs, FrozenOutputs
from ._models import SplitNetwork
from .classifiers import FinetuneClassifier, GradClassifier, GradfeatClassifier
from ._registry import (
    ENTRY_POINT_GROUP,
    create_protocol,
    get_protocol_class,
    list_protocols,
    register_protocol,
)
from .finetune import FinetuneProtocol
from .gradfeat import GradFeatProtocol
from .gradient import GradProtocol
from .knn import KNNProtocol
from .linear import LinearProtocol
from .run import (
    ALL_PROTOCOLS,
    ProtocolResult,
    build_trainer,
    expand_protocols,
    iter_protocols,
    metric_name,
    run_protocols,
)

__all__ = [
    "ALL_PROTOCOLS",
    "CachedInputs",
    "ENTRY_POINT_GROUP",
    "FinetuneClassifier",
    "FinetuneProtocol",
    "GradClassifier",
    "GradfeatClassifier",
    "FrozenOutputs",
    "GradFeatProtocol",
    "GradProtocol",
    "KNNProtocol",
    "LinearProtocol",
    "ProtocolClassifier",
    "ProtocolResult",
    "SplitNetwork",
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
