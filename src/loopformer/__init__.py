"""loopformer: recurrent-depth transformers (prelude -> shared core looped T times -> coda)."""

from .backbone import Backbone
from .cache import KVCache
from .config import PRESETS, ModelConfig
from .core import RecurrentCore
from .lm import LoopLM, LoopLMOutput

__all__ = ["Backbone", "KVCache", "LoopLM", "LoopLMOutput", "ModelConfig", "PRESETS",
           "RecurrentCore"]
__version__ = "0.1.0"
