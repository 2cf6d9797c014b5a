"""Pretraining recipes, one LightningModule each, by ``--method`` name."""

from ._base import PretextModule
from .bigan import BiGANPretext
from .rotation import RotationPretext
from .simclr import SimCLRPretext
from .supervised import SupervisedPretext

RECIPES: dict[str, type[PretextModule]] = {
    "rotation": RotationPretext,
    "bigan": BiGANPretext,
    "supervised": SupervisedPretext,
    "simclr": SimCLRPretext,
}

__all__ = [
    "RECIPES",
    "BiGANPretext",
    "PretextModule",
    "RotationPretext",
    "SimCLRPretext",
    "SupervisedPretext",
]
