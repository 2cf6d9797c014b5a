"""Backbones from any source: timm, torchvision, the zoo and entry-point plugins."""

from ._registry import (
    BACKBONE_GROUP,
    SOURCE_GROUP,
    get_source,
    list_backbones,
    refresh_entry_points,
    register_backbone,
)
from .checkpoint import LoadReport, load_checkpoint, read_state_dict, remap_state_dict
from .factory import Backbone, create_backbone
from .sources import BackboneSource, TimmSource, TorchvisionSource, ZooSource

__all__ = [
    "BACKBONE_GROUP",
    "SOURCE_GROUP",
    "Backbone",
    "BackboneSource",
    "LoadReport",
    "TimmSource",
    "TorchvisionSource",
    "ZooSource",
    "create_backbone",
    "get_source",
    "list_backbones",
    "load_checkpoint",
    "read_state_dict",
    "refresh_entry_points",
    "register_backbone",
    "remap_state_dict",
]
