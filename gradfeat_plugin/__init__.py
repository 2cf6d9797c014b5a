"""gradfeat-plugin: gradients as features for lightly's benchmark suite.

>>> import gradfeat_plugin
>>> "gradfeat" in gradfeat_plugin.list_protocols()
True
"""

from .backbones import (
    Backbone,
    LoadReport,
    create_backbone,
    list_backbones,
    load_checkpoint,
    register_backbone,
)
from .config import get_cfg, load_config
from .data import DatasetSplits, get_dataset, list_datasets
from .errors import GradfeatError
from .linearize import (
    LinearizedBackbone,
    default_split,
    fold_batchnorm,
    linearize,
    reinitialize,
    resolve_split,
)
from .protocols import (
    FinetuneClassifier,
    GradClassifier,
    GradfeatClassifier,
    KNNFeatureClassifier,
    LinearProbeClassifier,
    ProtocolResult,
    create_protocol,
    list_protocols,
    register_protocol,
    run_protocols,
)
from .results import ResultsStore, leaderboard_table, plot_leaderboard, render
from .zoo import list_zoo_models, zoo_model

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "DatasetSplits",
    "FinetuneClassifier",
    "GradClassifier",
    "GradfeatClassifier",
    "KNNFeatureClassifier",
    "LinearProbeClassifier",
    "GradfeatError",
    "LinearizedBackbone",
    "LoadReport",
    "ProtocolResult",
    "ResultsStore",
    "create_backbone",
    "create_protocol",
    "default_split",
    "fold_batchnorm",
    "get_cfg",
    "get_dataset",
    "leaderboard_table",
    "linearize",
    "list_backbones",
    "list_datasets",
    "list_protocols",
    "list_zoo_models",
    "load_checkpoint",
    "load_config",
    "plot_leaderboard",
    "register_backbone",
    "register_protocol",
    "reinitialize",
    "render",
    "resolve_split",
    "run_protocols",
    "zoo_model",
]
