"""Hugging Face interop (the optional extra `loopformer[hf]`): `LoopConfig`, `LoopForCausalLM`,
registered with AutoConfig / AutoModelForCausalLM when this module is imported.

`LoopForCausalLM` holds a `LoopLM` as `.model`; `generate` runs through HF's GenerationMixin
with loopformer's own KV cache (the model supplies it, as HF's recurrent models do), so the
prefix is not recomputed. `num_steps` and the exit criterion are `generate` arguments that
default to the config's (`mean_steps`; no exit criterion).
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .config import ModelConfig
from .model.cache import KVCache
from .model.lm import MODEL_TYPE, LoopLM

MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]
# transformers 5.24 renamed the cache argument of forward and generate, and the output field,
# from `past_key_values` to `cache` (the old name still works, with a deprecation warning).
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class LoopConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        defaults = ModelConfig().to_dict()
        fields = {k: kwargs.pop(k, defaults[k]) for k in MODEL_FIELDS}
        self.__dict__.update(fields)
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        """The validated loopformer config this HF config describes."""
        return ModelConfig.from_dict({k: getattr(self, k) for k in MODEL_FIELDS})


class GenerationCache(KVCache):
    """loopformer's cache with the one method HF's generation loop asks of a cache."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seq_len


class LoopForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LoopConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: LoopConfig):
        super().__init__(config)
        self.model = LoopLM(config.model_config())
        self.post_init()

    def _init_weights(self, module) -> None:
        """LoopLM initialised its parameters itself, and loaded weights replace them. What
        HF's loader leaves uninitialised are the buffers not saved with the weights (built
        on the meta device): the RoPE tables and step frequencies are rebuilt."""
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model brings its own cache (prepare_inputs_for_generation)

    def get_input_embeddings(self):
        return self.model.embed

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool | None = None,
                labels: torch.Tensor | None = None, num_steps=None,
                exit_criterion: str | None = None, exit_threshold: float | None = None,
                cache: KVCache | None = None, **unused) -> CausalLMOutputWithPast:
        """`cache` and `past_key_values` (its name before transformers 5.24) are one argument."""
        out = self.model(input_ids, num_steps, attention_mask=attention_mask,
                         past_key_values=cache if cache is not None else past_key_values,
                         use_cache=bool(use_cache), labels=labels,
                         exit_criterion=exit_criterion, exit_threshold=exit_threshold)
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits,
                                      **{CACHE: out.past_key_values})

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, past_key_values=None,
                                      attention_mask: torch.Tensor | None = None,
                                      use_cache: bool = True, cache=None, **kwargs) -> dict:
        """The tokens the cache has not seen, and the cache (a new one on the first call)."""
        cache = cache if cache is not None else past_key_values
        if not isinstance(cache, KVCache):
            cache = GenerationCache(
                mode="exact" if kwargs.get("exit_criterion") is None else "latest")
        new = input_ids[:, cache.seq_len:]
        inputs = {k: v for k, v in kwargs.items() if k in (
            "num_steps", "exit_criterion", "exit_threshold")}
        return {"input_ids": new, "attention_mask": attention_mask, CACHE: cache,
                "use_cache": use_cache, **inputs}


AutoConfig.register(MODEL_TYPE, LoopConfig)
AutoModelForCausalLM.register(LoopConfig, LoopForCausalLM)
