"""Defaults and config loading (fvcore ``CfgNode``; YAML files in ``configs/``)."""

from .defaults import get_cfg
from .loading import CONFIG_DIR, dataset_config, load_config
from .protocol_kwargs import recommended_kwargs
from .validate import validate_config

__all__ = [
    "CONFIG_DIR",
    "dataset_config",
    "get_cfg",
    "load_config",
    "recommended_kwargs",
    "validate_config",
]
