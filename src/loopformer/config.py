"""Validated model configuration and named presets.

Every architectural variant of a recurrent-depth transformer is one field of `ModelConfig`;
`__post_init__` rejects a bad value with a `ValueError` that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import DictConfig

Injection = Literal["add", "concat", "lti", "gated"]
StateInit = Literal["zeros", "embed", "noise"]
StepEmbedding = Literal["none", "learned", "sinusoidal"]
NormPlacement = Literal["pre", "sandwich"]
CoreKind = Literal["recurrent", "fixed"]
Halting = Literal["none", "act"]
AttentionKind = Literal["gqa", "mla"]
FFNKind = Literal["dense", "moe"]
MoEBalance = Literal["aux-free", "aux-loss"]



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
    attention_window: int | None = None
    """Sliding-window attention (Mistral 7B): a token sees keys at most this many positions
    away (back, or either side without causal); None: every key. A rule that reads its
    neighbours then meets no unseen distance on longer inputs (docs/results.md, chains)."""
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
    attention: AttentionKind = "gqa"
    """'gqa': grouped-query attention; 'mla': multi-head latent attention (DeepSeek-V2), whose
    cache holds one latent and one shared rope key per token."""
    q_lora_rank: int | None = None
    """MLA: width of the query bottleneck; None projects queries from the input directly."""
    kv_lora_rank: int | None = None
    """MLA: width of the latent that keys and values are rebuilt from; None means d_model/4."""
    rope_head_dim: int | None = None
    """MLA: extra rotary dimensions per query head, one rope key shared by all heads; None
    means head_dim/2 (DeepSeek-V2: 64 beside 128)."""
    ffn: FFNKind = "dense"
    """'dense': one SwiGLU; 'moe': routed experts plus shared experts (DeepSeekMoE)."""
    n_experts: int = 8
    """MoE: routed experts."""
    n_shared_experts: int = 1
    """MoE: experts every token uses."""
    experts_per_token: int = 2
    """MoE: routed experts chosen per token (top-k); no token is ever dropped."""
    expert_hidden: int | None = None
    """MoE: SwiGLU width of one expert, a multiple of 8; None means the dense width /
    (k + shared), rounded down to a multiple of 8, so the active parameters match the dense
    model's."""
    moe_balance: MoEBalance = "aux-free"
    """MoE load balancing: 'aux-free' (DeepSeek-V3 selection bias, moved after each update)
    or 'aux-loss' (Switch Transformer's auxiliary loss, added by the trainer)."""
    moe_bias_rate: float = 0.001
    """MoE aux-free: the bias step gamma per update (DeepSeek-V3: 0.001)."""
    moe_aux_weight: float = 0.01
    """MoE aux-loss: the weight alpha of the auxiliary loss (Switch Transformer: 0.01)."""
    step_lora_rank: int = 0
    """Per-step LoRA adapters on the core's linear layers, one set per thinking step (steps
    beyond max_step_embeddings reuse the last set); 0 = off."""

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
        _require(self.attention_window is None or self.attention_window >= 1,
                 "attention_window", f"must be >= 1 or None, got {self.attention_window}")
        for name in ("noise_std", "rope_theta", "norm_eps", "init_std"):
            _require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        # Weights drawn with a std far above 1 overflow the logits (found by the property test).
        _require(self.init_std <= 1, "init_std", f"must be <= 1 (GPT-2 uses 0.02), got "
                 f"{self.init_std}")
        self._check_variants()
        # The gated update never re-injects e (Chen 2026): e must reach the loop through s_0.
        _require(self.injection != "gated" or self.state_init == "embed", "state_init",
                 "injection='gated' does not re-inject the input, so state_init must be 'embed'")

    def _check_variants(self) -> None:
        """MLA, MoE and per-step LoRA (DESIGN.md 2.1)."""
        for name in ("q_lora_rank", "kv_lora_rank"):
            rank = getattr(self, name)
            _require(rank is None or 1 <= rank < self.d_model, name,
                     f"must be >= 1 and smaller than d_model={self.d_model} (a bottleneck), "
                     f"or None; got {rank}")
        rope_dim = self.rope_head_dim
        _require(rope_dim is None or (rope_dim >= 2 and rope_dim % 2 == 0), "rope_head_dim",
                 f"must be even and >= 2 (RoPE rotates pairs), or None; got {rope_dim}")
        _require(self.attention == "gqa" or self.n_kv_heads in (None, self.n_heads),
                 "n_kv_heads", "has no meaning with attention='mla' (keys and values come from "
                 "one shared latent): leave it None")
        _require(self.n_experts >= 1, "n_experts", f"must be >= 1, got {self.n_experts}")
        _require(self.n_shared_experts >= 0, "n_shared_experts",
                 f"must be >= 0, got {self.n_shared_experts}")
        _require(1 <= self.experts_per_token <= self.n_experts, "experts_per_token",
                 f"must lie in [1, n_experts={self.n_experts}], got {self.experts_per_token}")
        # Grouped matmul kernels read rows aligned to 16 bytes: widths in multiples of 8.
        _require(self.expert_hidden is None or self.expert_hidden % 8 == 0 and
                 self.expert_hidden >= 8, "expert_hidden",
                 f"must be a positive multiple of 8 or None, got {self.expert_hidden}")
        _require(self.ffn == "dense" or self.d_model % 8 == 0, "d_model",
                 f"must be a multiple of 8 with ffn='moe' (grouped matmul rows are aligned to "
                 f"16 bytes), got {self.d_model}")
        for name in ("moe_bias_rate", "moe_aux_weight"):
            _require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _require(self.step_lora_rank >= 0, "step_lora_rank",
                 f"must be >= 0 (0 = off), got {self.step_lora_rank}")
        _require(self.step_lora_rank == 0 or self.core == "recurrent", "step_lora_rank",
                 "needs core='recurrent': the untied baseline has no shared block to adapt")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def latent_rank(self) -> int:
        """MLA's kv_lora_rank, resolved."""
        return self.kv_lora_rank if self.kv_lora_rank is not None else max(1, self.d_model // 4)

    @property
    def rope_dim(self) -> int:
        """Rotary dimensions per head: all of head_dim (GQA) or MLA's decoupled rope dims."""
        if self.attention == "gqa":
            return self.head_dim
        return self.rope_head_dim if self.rope_head_dim is not None else \
            max(2, self.head_dim // 2 // 2 * 2)

    @property
    def expert_width(self) -> int:
        if self.expert_hidden is not None:
            return self.expert_hidden
        share = self.ffn_width // (self.experts_per_token + self.n_shared_experts)
        return max(8, share // 8 * 8)

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
    # The seeds' OpenMythos model at its reference sizes (DESIGN.md 2.1): MLA (kv latent 512,
    # query bottleneck 1536, rope 64 beside 128), 64 routed experts of width 512 + 2 shared,
    # top-4, LTI injection, ACT, per-step LoRA of rank 16 over its 16 loop steps; 2 prelude /
    # 1 looped / 2 coda blocks, vocab 32000, RoPE base 500000. (OpenMythos keeps its prelude
    # and coda dense; here ffn="moe" applies to every block.)
    "openmythos": ModelConfig(vocab_size=32000, d_model=2048, n_heads=16, n_prelude=2,
                              n_core=1, n_coda=2, injection="lti", halting="act",
                              attention="mla", q_lora_rank=1536, kv_lora_rank=512,
                              rope_head_dim=64, ffn="moe", n_experts=64, n_shared_experts=2,
                              experts_per_token=4, expert_hidden=512, step_lora_rank=16,
                              max_step_embeddings=16, mean_steps=16, max_seq_len=4096,
                              rope_theta=500000.0),
    # A small shared-layer MoE transformer in the spirit of MoEUT (Csordas et al. 2024): no
    # prelude or coda, a group of 2 blocks looped 8 times, fine-grained routed experts without
    # shared ones. Sizes are ours (~6M parameters), not the paper's.
    "moeut-small": ModelConfig(vocab_size=8192, d_model=256, n_heads=4, n_prelude=0, n_core=2,
                               n_coda=0, injection="add", ffn="moe", n_experts=16,
                               n_shared_experts=0, experts_per_token=4, expert_hidden=128,
                               max_seq_len=1024, mean_steps=8),
}
