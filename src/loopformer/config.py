"""Validated model configuration and named presets.

Every architectural variant of a recurrent-depth transformer is one field of `ModelConfig`;
`__post_init__` rejects a bad value with a `ValueError` that names the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Literal

Injection = Literal["add", "concat", "lti", "gated"]
StateInit = Literal["zeros", "embed", "noise"]
StepEmbedding = Literal["none", "learned", "sinusoidal"]
NormPlacement = Literal["pre", "sandwich"]
CoreKind = Literal["recurrent", "fixed"]
Halting = Literal["none", "act"]



class DictConfig:
    """replace / to_dict / from_dict for a frozen config dataclass; from_dict names any
    unknown field; check_types rejects a value of the wrong type naming the field (and makes
    an int given for a float field a float)."""

    def check_types(self) -> None:
        """Every field against its annotation: an int field takes an int (not a bool, float
        or string), a float field a finite int or float, a bool field a bool, a Literal one
        of its values, an optional field also None; tuples and dicts element by element."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _fits(value, hints[field.name]):
                raise ValueError(f"{type(self).__name__}.{field.name} must be "
                                 f"{_describe(hints[field.name])}, got {value!r}")
            takes_float = float in (hints[field.name], *typing.get_args(hints[field.name]))
            if takes_float and isinstance(value, int):  # JSON's 1 for 1.0: keep tensors float
                object.__setattr__(self, field.name, float(value))

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
        self.check_types()
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
        _require(0 < self.halt_threshold < 1, "halt_threshold",
                 f"must lie in (0, 1), got {self.halt_threshold}")
        _require(self.layer_scale_init is None or self.layer_scale_init > 0, "layer_scale_init",
                 f"must be > 0 or None, got {self.layer_scale_init}")
        for name in ("noise_std", "rope_theta", "norm_eps", "init_std"):
            _require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        # Weights drawn with a std far above 1 overflow the logits (found by the property test).
        _require(self.init_std <= 1, "init_std", f"must be <= 1 (GPT-2 uses 0.02), got "
                 f"{self.init_std}")
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


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return isinstance(value, tuple) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and \
            all(_fits(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # inf and nan make no sense in any float field of ours
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return f"a tuple of {_describe(args[0])}"
    if origin is tuple:
        return f"a tuple of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is dict:
        return f"a dict of {_describe(args[0])} -> {_describe(args[1])}"
    return {int: "an int", float: "a finite number", bool: "true or false",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{field} {message}")



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
