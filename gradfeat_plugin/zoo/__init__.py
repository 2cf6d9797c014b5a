"""Model zoo: pretraining recipes (rotation, BiGAN, supervised, SimCLR) and a cache."""

from .archs import BiGANEncoder, SmallResNet, create_arch, list_archs
from .cache import metadata_path, zoo_cache_dir
from .pretrain import list_methods, pretrain
from .registry import ZOO, ZooEntry, list_zoo_models, zoo_checkpoint_path, zoo_model

__all__ = [
    "ZOO",
    "BiGANEncoder",
    "SmallResNet",
    "ZooEntry",
    "create_arch",
    "list_archs",
    "list_methods",
    "list_zoo_models",
    "metadata_path",
    "pretrain",
    "zoo_cache_dir",
    "zoo_checkpoint_path",
    "zoo_model",
]
