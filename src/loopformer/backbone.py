"""Prelude -> recurrent core -> coda, on embeddings; shared by the LM and the task interfaces."""

from __future__ import annotations

import torch
from torch import nn

from .cache import KVCache
from .config import ModelConfig
from .core import CoreOutput, FixedDepthCore, RecurrentCore
from .layers import AttentionContext, RMSNorm, RotaryEmbedding, make_block


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta) \
            if cfg.rope else None
        self.prelude = nn.ModuleList(make_block(cfg) for _ in range(cfg.n_prelude))
        self.core = RecurrentCore(cfg) if cfg.core == "recurrent" else FixedDepthCore(cfg)
        self.coda = nn.ModuleList(make_block(cfg) for _ in range(cfg.n_coda))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self._compiled: dict = {}  # filled by compile_regions()

    def compile_regions(self, **options) -> None:
        """torch.compile the repeated regions in place (options go to torch.compile): the
        prelude, one core step (injection + shared blocks + renormalisation) and the coda with
        the final norm. The loop over steps stays in Python, so a new number of steps reuses
        the compiled code. Calls with a KV cache take the eager regions (their per-slot
        bookkeeping is Python); LoopLM.compile_regions compiles such calls whole."""
        self._compiled = {"encode": torch.compile(self._encode, **options),
                          "decode": torch.compile(self._decode, **options)}
        self.core.compile_update(**options)

    def context(self, batch: int, length: int, device: torch.device,
                attention_mask: torch.Tensor | None = None,
                structure_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> AttentionContext:
        """Attention inputs for `length` new tokens (after `cache.seq_len` cached ones)."""
        return make_context(self.rope, self.cfg.causal, batch, length, device, attention_mask,
                            structure_mask, cache)

    def encode(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """The prelude: embeddings -> e, the input injected into every core step."""
        return self._region("encode", ctx)(x, ctx)

    def decode(self, state: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """The coda and final norm: a core state -> features for the task readout."""
        return self._region("decode", ctx)(state, ctx)

    def _region(self, name: str, ctx: AttentionContext):
        compiled = self._compiled.get(name) if ctx.cache is None else None
        return compiled or getattr(self, "_" + name)

    def _encode(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        for i, block in enumerate(self.prelude):
            x = block(x, ctx, ("prelude", i))
        return x

    def _decode(self, state: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        for i, block in enumerate(self.coda):
            state = block(state, ctx, ("coda", i))
        return self.final_norm(state)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, num_steps,
                **core_options) -> tuple[torch.Tensor, CoreOutput]:
        """Embeddings -> coda features; core_options go to RecurrentCore.forward."""
        core_out = self.core(self.encode(x, ctx), ctx, num_steps, **core_options)
        return self.decode(core_out.state, ctx), core_out


def make_context(rope: RotaryEmbedding | None, causal: bool, batch: int, length: int,
                 device: torch.device, attention_mask: torch.Tensor | None,
                 structure_mask: torch.Tensor | None,
                 cache: KVCache | None) -> AttentionContext:
    past = cache.seq_len if cache is not None else 0
    if attention_mask is None:
        new_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or \
                attention_mask.shape[1] not in (length, past + length):
            raise ValueError(
                f"attention_mask must have shape ({batch}, {length}) or ({batch}, "
                f"{past + length}) (past + new tokens), got {tuple(attention_mask.shape)}")
        new_mask = attention_mask[:, -length:].to(device=device, dtype=torch.bool)
    if structure_mask is not None:
        if structure_mask.shape != (batch, length, length):
            raise ValueError(f"structure_mask must have shape ({batch}, {length}, {length}), "
                             f"got {tuple(structure_mask.shape)}")
        if past:
            raise ValueError("structure_mask cannot be combined with a KV cache")

    # Left padding shifts positions so that a sequence's first real token is at position 0.
    start = cache.next_position if past else torch.zeros(batch, dtype=torch.long, device=device)
    positions = start[:, None] + (new_mask.long().cumsum(1) - 1).clamp(min=0)
    cos, sin = rope(positions) if rope is not None else (None, None)
    common = dict(positions=positions, token_mask=new_mask, cache=cache)

    keys = new_mask if not past else torch.cat((cache.key_mask, new_mask), dim=1)
    padded = not bool(keys.all())
    if not padded and structure_mask is None:
        if past == 0:
            return AttentionContext(cos, sin, None, causal, **common)
        if length == 1 or not causal:
            return AttentionContext(cos, sin, None, False, **common)
    allowed = keys[:, None, :].expand(batch, length, past + length)
    if causal:
        allowed = allowed & torch.ones(length, past + length, dtype=torch.bool,
                                       device=device).tril(diagonal=past)
    if structure_mask is not None:
        allowed = allowed & structure_mask.to(device=device, dtype=torch.bool)
    # Every token sees itself, so a padding row never takes a softmax over nothing (NaN).
    diagonal = torch.zeros(length, past + length, dtype=torch.bool, device=device)
    diagonal[:, past:] = torch.eye(length, dtype=torch.bool, device=device)
    return AttentionContext(cos, sin, (allowed | diagonal)[:, None], False, **common)
