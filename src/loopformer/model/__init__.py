"""Everything a forward pass needs, and nothing above it: blocks, the recurrent core, the
backbone, the language model and its KV cache."""

from .backbone import Backbone
from .cache import KVCache, SlotKey, cache_slots
from .core import FixedDepthCore, RecurrentCore
from .depth import Depth
from .lm import LoopLM, LoopLMOutput
from .observers import CoreOutput, StateCollector, StepObserver

__all__ = ["Backbone", "CoreOutput", "Depth", "FixedDepthCore", "KVCache", "LoopLM",
           "LoopLMOutput", "RecurrentCore", "SlotKey", "StateCollector", "StepObserver",
           "cache_slots"]
