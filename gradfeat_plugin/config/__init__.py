"""Defaults and config loading (fvcore ``CfgNode``; YAML files in ``configs/``)."""

from .defaults import get_cfg

__all__ = ["get_cfg"]
