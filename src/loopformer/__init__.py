"""loopformer: recurrent-depth transformers (prelude -> shared core looped T times -> coda)."""

from .compile import compile_regions
from .config import PRESETS, ModelConfig
from .model import Backbone, Depth, KVCache, LoopLM, LoopLMOutput, RecurrentCore

__all__ = ["Backbone", "Depth", "KVCache", "LoopLM", "LoopLMOutput", "ModelConfig", "PRESETS",
           "RecurrentCore", "compile_regions"]
__version__ = "0.1.0"
