"""Grouped-query attention (Ainslie et al. 2023) over torch's scaled_dot_product_attention.

An attention module owns the layout of what it caches: it hands the KV cache a tuple of
tensors with the sequence on dim -2 (here keys and values, (B, kv_heads, T, head_dim)) and
gets back the same tuple over past + new tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .context import AttentionContext
from .lora import Linear
from .rope import apply_rope

SDPA_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # One fused projection for q, k and v: one matmul instead of three.
        self.qkv = Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim)
        self.out = Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, layer: int) -> torch.Tensor:
        """`layer`: this block's index in its region, naming its cache slot."""
        B, T, _ = x.shape
        H, H_kv = self.n_heads, self.n_kv_heads
        # split (not slicing) so that backward joins the gradients with one cat instead of
        # zero-filling a full-size tensor per slice.
        qkv = self.qkv(x, ctx.step).view(B, T, H + 2 * H_kv, self.head_dim)
        qk, v = qkv.split([H + H_kv, H_kv], dim=2)
        if ctx.cos is not None:  # queries and keys rotated together: one set of ops
            qk = apply_rope(qk, ctx.cos, ctx.sin)
        q, k = (t.transpose(1, 2) for t in qk.split([H, H_kv], dim=2))
        v = v.transpose(1, 2)
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer, (k, v))
        return self.out(attend(q, k, v, ctx).transpose(1, 2).reshape(B, T, -1), ctx.step)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttentionContext,
           scale: float | None = None) -> torch.Tensor:
    """SDPA over (B, heads, T, dim) queries and (B, kv_heads, T_keys, dim) keys and values;
    each kv head serves n_heads / kv_heads query heads. `scale`: SDPA's (None: 1/sqrt(dim))."""
    if q.shape[-2] == 1 and not ctx.is_causal and q.device.type == "cpu" and \
            torch.compiler.is_compiling():
        return attend_one_query(q, k, v, ctx.mask, scale)
    gqa = {}
    if k.shape[1] != q.shape[1]:
        if SDPA_HAS_GQA:  # torch >= 2.5 shares each kv head across its group, no copies
            gqa = {"enable_gqa": True}
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask, is_causal=ctx.is_causal,
                                          scale=scale, **gqa)


def attend_one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None, scale: float | None = None) -> torch.Tensor:
    """`attend` for one query per row as two matmuls and a softmax. Compiled decoding on a CPU
    uses it: inductor fuses these with the projections around them, where SDPA stays a library
    call of ~25 us per block (+9-13% tokens/s at batch 1, docs/performance.md)."""
    B, H, _, D = q.shape
    H_kv = k.shape[1]
    rows = q.reshape(B, H_kv, H // H_kv, D)  # each kv head's query heads as rows
    scores = (rows @ k.transpose(-1, -2)).float() * (D ** -0.5 if scale is None else scale)
    if mask is not None:  # (B, 1, 1, T_keys) broadcasts over heads and rows
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1).to(v.dtype) @ v).reshape(B, H, 1, v.shape[-1])
