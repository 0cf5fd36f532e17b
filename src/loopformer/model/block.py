"""One transformer block (norm placement, LayerScale) and a stack of blocks."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import Attention
from .context import AttentionContext
from .mla import LatentAttention
from .mlp import SwiGLU
from .moe import MoE
from .norm import RMSNorm

ATTENTIONS = {"gqa": Attention, "mla": LatentAttention}
FFNS = {"dense": SwiGLU, "moe": MoE}


class LayerScale(nn.Module):
    """Per-channel gamma on a residual branch (Touvron et al. 2021; Chen 2026 init 1e-4)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _branch_scale(cfg: ModelConfig) -> nn.Module:
    if cfg.layer_scale_init is None:
        return nn.Identity()
    return LayerScale(cfg.d_model, cfg.layer_scale_init)


class PreNormBlock(nn.Module):
    """x = x + attn(n(x)); x = x + mlp(n(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn, self.mlp = ATTENTIONS[cfg.attention](cfg), FFNS[cfg.ffn](cfg)
        self.attn_scale, self.mlp_scale = _branch_scale(cfg), _branch_scale(cfg)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, layer: int) -> torch.Tensor:
        x = x + self.attn_scale(self.attn(self.attn_norm(x), ctx, layer))
        return x + self.mlp_scale(self.mlp(self.mlp_norm(x), ctx))


class SandwichBlock(PreNormBlock):
    """Huginn's sandwich norm: x = n2(x + attn(n1 x)); x = n4(x + mlp(n3 x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attn_out_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp_out_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, layer: int) -> torch.Tensor:
        x = self.attn_out_norm(x + self.attn_scale(self.attn(self.attn_norm(x), ctx, layer)))
        return self.mlp_out_norm(x + self.mlp_scale(self.mlp(self.mlp_norm(x), ctx)))


BLOCKS = {"pre": PreNormBlock, "sandwich": SandwichBlock}


class BlockStack(nn.ModuleList):
    """`n` blocks applied in order. A ModuleList, so parameter names stay `<stack>.<i>.…`;
    its forward makes the stack one unit that compile_regions can compile."""

    def __init__(self, cfg: ModelConfig, n: int):
        super().__init__(BLOCKS[cfg.norm](cfg) for _ in range(n))

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        for layer, block in enumerate(self):
            x = block(x, ctx, layer)
        return x
