"""Training on packs: a thin layer over transformers, peft and torch.distributed.

Importing this package needs torch (``pip install "sftpack[train]"``); the rest of sftpack does
not.
"""

from .config import TrainConfig as TrainConfig
from .config import load_config as load_config
from .recipe import SFTRecipe as SFTRecipe
from .recipe import train as train

__all__ = ["SFTRecipe", "TrainConfig", "load_config", "train"]
