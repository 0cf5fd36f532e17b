"""Transformer building blocks: RMSNorm, RoPE, grouped-query attention, SwiGLU, blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

SDPA_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in (at least) fp32, so bf16 activations do not lose the mean-square.
        compute = torch.promote_types(x.dtype, torch.float32)
        return F.rms_norm(x.to(compute), self.weight.shape, self.weight.to(compute),
                          self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE tables over the full head dimension, always kept in fp32.

    Rotating the pair (x1, x2) by an angle a is x * [cos a, cos a] + [x2, x1] * [-sin a, sin a]
    on the two halves of the head: the tables hold the signs, so applying it is two multiplies,
    one add and one concatenation. `model.to(torch.bfloat16)` casts every floating buffer;
    `_apply` rebuilds the tables in fp32 afterwards, so positions stay exact after a round
    trip through any dtype.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        cos, sin = self._tables(torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.head_dim // 2
        inv_freq = self.theta ** (-torch.arange(half, dtype=torch.float64, device="cpu") / half)
        positions = torch.arange(self.max_seq_len, dtype=torch.float64, device="cpu")
        angles = positions[:, None] * inv_freq[None]
        cos = torch.cat((angles.cos(), angles.cos()), dim=-1)
        sin = torch.cat((-angles.sin(), angles.sin()), dim=-1)
        return cos.float().to(device), sin.float().to(device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.cos, self.sin = self._tables(self.cos.device)
        return self

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) long -> cos, sin (B, T, 1, head_dim) in fp32, to broadcast over
        the heads of a (B, T, heads, head_dim) tensor."""
        return self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, heads, head_dim) by the tables of RotaryEmbedding.forward."""
    first, second = x.chunk(2, dim=-1)
    swapped = torch.cat((second, first), dim=-1)
    return (x * cos + swapped * sin).to(x.dtype)


@dataclass
class AttentionContext:
    """Everything attention needs that is the same for every block of one forward pass.

    Built once per call so the recurrent loop does no mask or table work per step.
    """

    cos: torch.Tensor | None  # (B, T, 1, head_dim) fp32; None when the model has no RoPE
    sin: torch.Tensor | None
    mask: torch.Tensor | None  # bool (B, 1, T, T_keys), True = may attend; None = see is_causal
    is_causal: bool
    positions: torch.Tensor  # (B, T) RoPE positions of the new tokens
    token_mask: torch.Tensor  # (B, T) bool, True = real token, False = padding
    cache: Any = None  # a KVCache when decoding incrementally


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # One fused projection for q, k and v: one matmul instead of three.
        self.qkv = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim,
                             bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, slot: Hashable | None = None):
        B, T, _ = x.shape
        H, H_kv = self.n_heads, self.n_kv_heads
        # split (not slicing) so that backward joins the gradients with one cat instead of
        # zero-filling a full-size tensor per slice.
        qk, v = self.qkv(x).view(B, T, H + 2 * H_kv, self.head_dim).split([H + H_kv, H_kv], 2)
        if ctx.cos is not None:  # queries and keys rotated together: one set of ops
            qk = apply_rope(qk, ctx.cos, ctx.sin)
        q, k = (t.transpose(1, 2) for t in qk.split([H, H_kv], dim=2))
        v = v.transpose(1, 2)
        if ctx.cache is not None and slot is not None:
            k, v = ctx.cache.update(slot, k, v)
        gqa = {}
        if self.n_kv_heads != self.n_heads:
            if SDPA_HAS_GQA:  # torch >= 2.5 shares each kv head across its group, no copies
                gqa = {"enable_gqa": True}
            else:
                groups = self.n_heads // self.n_kv_heads
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask, is_causal=ctx.is_causal,
                                           **gqa)
        return self.out(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_width, bias=False)
        self.down = nn.Linear(cfg.ffn_width, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LayerScale(nn.Module):
    """Per-channel gamma on a residual branch (Touvron et al. 2021; Chen 2026 init 1e-4)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _branch_scale(cfg: ModelConfig) -> nn.Module:
    return nn.Identity() if cfg.layer_scale_init is None else LayerScale(cfg.d_model,
                                                                         cfg.layer_scale_init)


class PreNormBlock(nn.Module):
    """x = x + attn(n(x)); x = x + mlp(n(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps), RMSNorm(cfg.d_model,
                                                                                   cfg.norm_eps)
        self.attn, self.mlp = Attention(cfg), SwiGLU(cfg)
        self.attn_scale, self.mlp_scale = _branch_scale(cfg), _branch_scale(cfg)

    def forward(self, x, ctx: AttentionContext, slot: Hashable | None = None):
        x = x + self.attn_scale(self.attn(self.attn_norm(x), ctx, slot))
        return x + self.mlp_scale(self.mlp(self.mlp_norm(x)))


class SandwichBlock(PreNormBlock):
    """Huginn's sandwich norm: x = n2(x + attn(n1 x)); x = n4(x + mlp(n3 x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attn_out_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp_out_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, x, ctx: AttentionContext, slot: Hashable | None = None):
        x = self.attn_out_norm(x + self.attn_scale(self.attn(self.attn_norm(x), ctx, slot)))
        return self.mlp_out_norm(x + self.mlp_scale(self.mlp(self.mlp_norm(x))))


BLOCKS = {"pre": PreNormBlock, "sandwich": SandwichBlock}


def make_block(cfg: ModelConfig) -> nn.Module:
    return BLOCKS[cfg.norm](cfg)
