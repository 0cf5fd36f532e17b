"""Rotary position embedding (Su et al. 2021) with real tables that stay fp32."""

from __future__ import annotations

import torch
from torch import nn


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
        self.reset_buffers()
        return self

    def reset_buffers(self) -> None:
        """Rebuild the tables (not saved with the weights) on their current device."""
        self.cos, self.sin = self._tables(self.cos.device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) long -> cos, sin (B, T, 1, head_dim) in fp32, to broadcast over
        the heads of a (B, T, heads, head_dim) tensor."""
        return self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, heads, head_dim) by the tables of RotaryEmbedding.forward."""
    first, second = x.chunk(2, dim=-1)
    swapped = torch.cat((second, first), dim=-1)
    return (x * cos + swapped * sin).to(x.dtype)
