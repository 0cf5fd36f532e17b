"""Multi-head latent attention (DeepSeek-V2, Liu et al. 2024).

Keys and values are rebuilt from one latent per token, c = norm(W_dkv x) of width
kv_lora_rank: k_C = W_uk c, v = W_uv c. Queries go through an optional bottleneck
c_q = norm(W_dq x), q_C = W_uq c_q. RoPE is decoupled: q_R = RoPE(W_qr c_q) per head, and one
rope key k_R = RoPE(W_kr x) is shared by all heads; q = [q_C; q_R], k = [k_C; k_R]. The cache
holds only (c, k_R): kv_lora_rank + rope_head_dim numbers per token and slot, where grouped-query
attention holds 2 * kv_heads * head_dim. (OpenMythos caches the rope key once per head.)

Decoding one token against a cache uses the absorbed form (DeepSeek-V2): q_C . k_C =
(W_uk^T q_C) . c, so the query is folded into latent space and attends to the cached latents
themselves, as one shared key/value head ([c; k_R] and c); W_uv is applied to the attended
latent afterwards. The latents are never expanded, where the plain form rebuilds every past
token's keys and values at every step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import attend
from .context import AttentionContext
from .lora import Linear
from .norm import RMSNorm
from .rope import apply_rope


class LatentAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.rope_dim = cfg.n_heads, cfg.head_dim, cfg.rope_dim
        self.rank = cfg.latent_rank
        query_width = self.n_heads * (self.head_dim + self.rope_dim)
        if cfg.q_lora_rank is None:
            self.q_down = self.q_norm = None
            self.q_up = Linear(cfg.d_model, query_width)
        else:
            self.q_down = Linear(cfg.d_model, cfg.q_lora_rank)
            self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
            self.q_up = Linear(cfg.q_lora_rank, query_width)
        # The latent and the shared rope key in one matmul (W_dkv and W_kr stacked).
        self.kv_down = Linear(cfg.d_model, self.rank + self.rope_dim)
        self.kv_norm = RMSNorm(self.rank, cfg.norm_eps)
        self.kv_up = Linear(self.rank, 2 * self.n_heads * self.head_dim)  # W_uk and W_uv
        self.out = Linear(self.n_heads * self.head_dim, cfg.d_model)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, layer: int) -> torch.Tensor:
        B, T, _ = x.shape
        H, D, R, step = self.n_heads, self.head_dim, self.rope_dim, ctx.step
        c_q = x if self.q_down is None else self.q_norm(self.q_down(x, step))
        q = self.q_up(c_q, step).view(B, T, H, D + R)
        latent, k_rope = self.kv_down(x, step).split([self.rank, R], dim=-1)
        latent, k_rope = self.kv_norm(latent), k_rope.view(B, T, 1, R)
        q_nope, q_rope = q.split([D, R], dim=-1)
        if ctx.cos is not None:  # the query heads' rope parts and the shared key, rotated once
            q_rope, k_rope = apply_rope(torch.cat((q_rope, k_rope), dim=2), ctx.cos,
                                        ctx.sin).split([H, 1], dim=2)
        # Cached as (B, 1, T, width): one "head", the sequence on dim -2.
        latent, k_rope = latent.unsqueeze(1), k_rope.transpose(1, 2)
        if ctx.cache is not None:
            latent, k_rope = ctx.cache.update(layer, (latent, k_rope))
        if T == 1 and ctx.cache is not None:  # decoding: see the module docstring
            return self.out(self._absorbed(q_nope, q_rope, latent, k_rope, ctx), step)
        S = latent.shape[2]
        k_nope, v = self.kv_up(latent.squeeze(1), step).view(B, S, H, 2 * D).split([D, D], -1)
        k = torch.cat((k_nope, k_rope.transpose(1, 2).expand(B, S, H, R)), dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        y = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), ctx)
        return self.out(y.transpose(1, 2).reshape(B, T, H * D), step)

    def _absorbed(self, q_nope: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                  k_rope: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """Attention over the cached latents (B, 1, S, rank) without expanding them."""
        B, T, H, D = q_nope.shape
        up = self.kv_up.weight_at(ctx.step).view(H, 2, D, self.rank)  # W_uk, W_uv per head
        q_latent = torch.einsum("bthd,hdr->bhtr", q_nope, up[:, 0])
        q = torch.cat((q_latent, q_rope.transpose(1, 2)), dim=-1)
        k = torch.cat((latent, k_rope), dim=-1)
        # The scale of the plain form: its keys are head_dim + rope_dim wide.
        y = attend(q, k, latent, ctx, scale=(D + self.rope_dim) ** -0.5)  # (B, H, T, rank)
        return torch.einsum("bhtr,hdr->bthd", y, up[:, 1]).reshape(B, T, H * D)
