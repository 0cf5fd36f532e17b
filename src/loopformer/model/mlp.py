"""SwiGLU feed-forward (Shazeer 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .context import AttentionContext
from .lora import Linear


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig, width: int | None = None):
        super().__init__()
        width = cfg.ffn_width if width is None else width
        # One fused projection for the gate and the up branch.
        self.gate_up = Linear(cfg.d_model, 2 * width)
        self.down = Linear(width, cfg.d_model)

    def forward(self, x: torch.Tensor, ctx: AttentionContext | None = None) -> torch.Tensor:
        step = None if ctx is None else ctx.step
        gate, up = self.gate_up(x, step).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up, step)
