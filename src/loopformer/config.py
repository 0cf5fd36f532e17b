"""Validated model configuration and named presets.

Every architectural variant of a recurrent-depth transformer is one field of `ModelConfig`;
`__post_init__` rejects a bad value with a `ValueError` that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Injection = Literal["add", "concat", "lti", "gated"]
StateInit = Literal["zeros", "embed", "noise"]
StepEmbedding = Literal["none", "learned", "sinusoidal"]
NormPlacement = Literal["pre", "sandwich"]
CoreKind = Literal["recurrent", "fixed"]
Halting = Literal["none", "act"]

INJECTIONS = ("add", "concat", "lti", "gated")
STATE_INITS = ("zeros", "embed", "noise")
STEP_EMBEDDINGS = ("none", "learned", "sinusoidal")
NORMS = ("pre", "sandwich")
CORES = ("recurrent", "fixed")
HALTINGS = ("none", "act")


class DictConfig:
    """replace / to_dict / from_dict for a frozen config dataclass; from_dict names any
    unknown field."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: "
                             f"{sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class ModelConfig(DictConfig):
    """Shape and variant of a recurrent-depth model: prelude -> core looped T times -> coda."""

    vocab_size: int = 256
    """Token ids 0..vocab_size-1 (embedding rows and output logits)."""
    d_model: int = 128
    """Width of the residual stream and of the recurrent state."""
    n_heads: int = 4
    """Query heads per attention layer; must divide d_model."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means n_heads (plain multi-head)."""
    ffn_hidden: int | None = None
    """SwiGLU hidden width; None means 8/3 * d_model rounded up to a multiple of 64."""
    n_prelude: int = 1
    """Blocks run once before the loop: embeddings -> e, injected at every step."""
    n_core: int = 2
    """Blocks in the recurrent core, the unit looped T times."""
    n_coda: int = 1
    """Blocks run once after the loop, before the readout."""
    injection: Injection = "concat"
    """How e re-enters each step: add, concat (Huginn), lti (bounded update) or gated (Chen)."""
    state_init: StateInit = "zeros"
    """The state s_0 before the first step: zeros, embed (= e) or noise (Huginn)."""
    noise_std: float = 0.632
    """Std of the truncated-normal (+-3 std) state for state_init='noise' (Huginn: sqrt(2/5))."""
    step_embedding: StepEmbedding = "none"
    """Tell each step its index t: none, learned or sinusoidal."""
    max_step_embeddings: int = 64
    """Rows of the learned step table; steps beyond it reuse the last row."""
    layer_scale_init: float | None = None
    """Per-channel gamma on each attention/FFN branch (Chen 2026 uses 1e-4); None disables it."""
    norm: NormPlacement = "pre"
    """Norm placement in a block: pre (GPT-2) or sandwich (Huginn: before and after)."""
    causal: bool = True
    """Causal attention mask (language models); off for bidirectional tasks."""
    rope: bool = True
    """Rotary position embedding; off for inputs whose order carries no meaning (graph nodes)."""
    core: CoreKind = "recurrent"
    """'recurrent' loops the shared core; 'fixed' is the no-recurrence baseline: fixed_depth
    untied copies of the core, each applied once, whatever num_steps says."""
    fixed_depth: int = 8
    """core='fixed' only: the number of untied copies of the core."""
    halting: Halting = "none"
    """'act': a learned halting unit weights the step states (Adaptive Computation Time)."""
    halt_threshold: float = 0.99
    """ACT halts a token once its summed halting probability passes this (1 - eps)."""
    halt_min_steps: int = 1
    """ACT never halts a token before this many steps."""
    max_seq_len: int = 512
    """Longest sequence (RoPE table size and cache capacity)."""
    mean_steps: int = 8
    """Default number of core steps when a call does not say."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    gate_bias_init: float = -2.0
    """Update-gate bias for injection='gated': sigmoid(-2) keeps ~88% of the state per step."""
    init_std: float = 0.02
    """Std of the normal initialisation of linear and embedding weights."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_core", "max_seq_len", "mean_steps",
                     "max_step_embeddings", "fixed_depth", "halt_min_steps"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("n_prelude", "n_coda"):
            _require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _require(self.d_model % self.n_heads == 0, "n_heads",
                 f"must divide d_model={self.d_model}, got {self.n_heads}")
        _require(self.head_dim % 2 == 0, "n_heads",
                 f"head_dim = d_model / n_heads = {self.head_dim} must be even for RoPE")
        _require(self.kv_heads >= 1 and self.n_heads % self.kv_heads == 0, "n_kv_heads",
                 f"must be >= 1 and divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        _require(self.ffn_hidden is None or self.ffn_hidden >= 1, "ffn_hidden",
                 f"must be >= 1 or None, got {self.ffn_hidden}")
        _require_choice(self.injection, "injection", INJECTIONS)
        _require_choice(self.state_init, "state_init", STATE_INITS)
        _require_choice(self.step_embedding, "step_embedding", STEP_EMBEDDINGS)
        _require_choice(self.norm, "norm", NORMS)
        _require_choice(self.core, "core", CORES)
        _require_choice(self.halting, "halting", HALTINGS)
        _require(0 < self.halt_threshold < 1, "halt_threshold",
                 f"must lie in (0, 1), got {self.halt_threshold}")
        _require(self.layer_scale_init is None or self.layer_scale_init > 0, "layer_scale_init",
                 f"must be > 0 or None, got {self.layer_scale_init}")
        for name in ("noise_std", "rope_theta", "norm_eps", "init_std"):
            _require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        # The gated update never re-injects e (Chen 2026): e must reach the loop through s_0.
        _require(self.injection != "gated" or self.state_init == "embed", "state_init",
                 "injection='gated' does not re-inject the input, so state_init must be 'embed'")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_width(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return -(-8 * self.d_model // 3 // 64) * 64


    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{field} {message}")


def _require_choice(value: str, field: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, field, f"must be one of {choices}, got {value!r}")


PRESETS: dict[str, ModelConfig] = {
    # For tests: builds and runs in milliseconds.
    "tiny": ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_prelude=1, n_core=1,
                        n_coda=1, max_seq_len=64, mean_steps=4),
    # ~10M parameters: a small language model that trains on a laptop CPU.
    "lm-10m": ModelConfig(vocab_size=8192, d_model=384, n_heads=6, n_kv_heads=2, n_prelude=1,
                          n_core=2, n_coda=1, injection="concat", max_seq_len=1024, mean_steps=8),
    # ~100M parameters.
    "lm-100m": ModelConfig(vocab_size=50304, d_model=768, n_heads=12, n_kv_heads=4, n_prelude=2,
                           n_core=6, n_coda=2, injection="concat", norm="sandwich",
                           max_seq_len=2048, mean_steps=16),
    # Huginn-0125 (Geiping et al. 2025): 2 prelude / 4 core / 2 coda layers, d=5280, 55 heads,
    # vocab 65536, concat adapter, sandwich norm, ~3.5B parameters, mean recurrence 32.
    "huginn-3.5b": ModelConfig(vocab_size=65536, d_model=5280, n_heads=55, ffn_hidden=17920,
                               n_prelude=2, n_core=4, n_coda=2, injection="concat",
                               state_init="noise", norm="sandwich", max_seq_len=4096,
                               mean_steps=32),
}
