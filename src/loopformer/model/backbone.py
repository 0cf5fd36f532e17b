"""Prelude -> recurrent core -> coda, on embeddings; shared by the LM and the task interfaces."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from .block import BlockStack
from .cache import CacheWriter
from .context import AttentionContext, make_context
from .core import FixedDepthCore, RecurrentCore
from .depth import Depth
from .norm import RMSNorm
from .observers import CoreOutput, StateCollector, StepObserver
from .rope import RotaryEmbedding


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rope = RotaryEmbedding(cfg.rope_dim, cfg.max_seq_len, cfg.rope_theta) \
            if cfg.rope else None
        self.prelude = BlockStack(cfg, cfg.n_prelude)
        self.core = RecurrentCore(cfg) if cfg.core == "recurrent" else FixedDepthCore(cfg)
        self.coda = BlockStack(cfg, cfg.n_coda)
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def context(self, batch: int, length: int, device: torch.device,
                attention_mask: torch.Tensor | None = None,
                structure_mask: torch.Tensor | None = None,
                writer: CacheWriter | None = None) -> AttentionContext:
        """Attention inputs for `length` new tokens (after the writer's cached ones)."""
        cfg = self.cfg
        return make_context(self.rope, cfg.causal, batch, length, device, attention_mask,
                            structure_mask, writer,
                            collect_moe_losses=cfg.ffn == "moe" and cfg.moe_balance == "aux-loss",
                            window=cfg.attention_window)

    def encode(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """The prelude: embeddings -> e, the input injected into every core step."""
        return self.prelude(x, ctx.at("prelude", 0, len(self.prelude)))

    def decode(self, state: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """The coda and final norm: a core state -> features for the task readout."""
        if len(self.coda):  # (an exit probe decodes every step: no empty call then)
            state = self.coda(state, ctx.at("coda", 0, len(self.coda)))
        return self.final_norm(state)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, depth: Depth, *,
                all_steps: bool = False, observers: Sequence[StepObserver] = (),
                initial_state: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], CoreOutput]:
        """Embeddings -> coda features of the final state, or with all_steps of the state
        after every gradient step (per-step supervision, many depths in one pass)."""
        collector = StateCollector() if all_steps else None
        core_out = self.core.unroll(self.encode(x, ctx), ctx, depth,
                                    observers=[*observers, *filter(None, [collector])],
                                    initial_state=initial_state, generator=generator)
        states = collector.states if all_steps else [core_out.state]
        features = [self.decode(s, ctx) for s in states]
        if ctx.moe_losses:  # the mean over every MoE layer call of this pass
            core_out.aux_loss = torch.stack(ctx.moe_losses).mean()
        return features, core_out
