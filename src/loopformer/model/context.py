"""AttentionContext: what every block of one forward pass needs, built once per call."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .rope import RotaryEmbedding

if TYPE_CHECKING:
    from .cache import CacheWriter
    from .slots import SlotView


@dataclass
class AttentionContext:
    """Built once per call, so the recurrent loop does no mask or table work per step."""

    cos: torch.Tensor | None  # (B, T, 1, head_dim) fp32; None when the model has no RoPE
    sin: torch.Tensor | None
    mask: torch.Tensor | None  # bool (B, 1, T, T_keys), True = may attend; None = see is_causal
    is_causal: bool
    positions: torch.Tensor  # (B, T) RoPE positions of the new tokens
    token_mask: torch.Tensor  # (B, T) bool, True = real token, False = padding
    writer: CacheWriter | None = None  # this call's writer into a KVCache
    cache: SlotView | None = None  # the slots of the blocks being run (see `at`)
    # The core step's row in per-step tables (LoRA adapters, MoE load): a 0-d long tensor, so
    # that one compiled step serves every step; None outside the core.
    step: torch.Tensor | None = None
    moe_losses: list | None = None  # MoE auxiliary losses of this call (moe_balance="aux-loss")
    # (indices, batch size of the call) when this context covers only some batch rows (rows
    # whose tokens have all exited are left out of later steps: select_rows).
    rows: tuple[torch.Tensor, int] | None = None

    def at(self, region: str, step: int, layers: int,
           row: torch.Tensor | None = None) -> "AttentionContext":
        """The context for the `layers` blocks of one region (and core step, whose table row
        is `row`): with a cache, their slots are resolved here, outside any compiled region,
        so compiled code only writes tensors at an offset."""
        if self.writer is None and row is None:
            return self
        view = None if self.writer is None else self.writer.view(region, step, layers)
        if view is not None and self.rows is not None:
            view = view.select_rows(*self.rows)
        return replace(self, cache=view, step=row)

    def select_rows(self, rows: torch.Tensor) -> "AttentionContext":
        """The context of batch rows `rows` (indices) alone. Rows never attend to each other,
        so a step over these rows computes exactly what it would in the whole batch; cache
        entries are written for these rows only."""
        if self.rows is not None:
            raise ValueError("select_rows applies to a whole batch's context once")
        pick = lambda t: None if t is None else t[rows]
        return replace(self, cos=pick(self.cos), sin=pick(self.sin), mask=pick(self.mask),
                       positions=self.positions[rows], token_mask=self.token_mask[rows],
                       cache=None if self.cache is None else
                       self.cache.select_rows(rows, self.token_mask.shape[0]),
                       rows=(rows, self.token_mask.shape[0]))


def make_context(rope: RotaryEmbedding | None, causal: bool, batch: int, length: int,
                 device: torch.device, attention_mask: torch.Tensor | None = None,
                 structure_mask: torch.Tensor | None = None,
                 writer: CacheWriter | None = None,
                 collect_moe_losses: bool = False,
                 window: int | None = None) -> AttentionContext:
    """Attention inputs for `length` new tokens (after the cache's past tokens, if any);
    `window`: keys at most that many positions away (sliding-window attention)."""
    cache = writer.cache if writer is not None else None
    past = cache.seq_len if cache is not None else 0
    if attention_mask is None:
        new_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or \
                attention_mask.shape[1] not in (length, past + length):
            raise ValueError(
                f"attention_mask must have shape ({batch}, {length}) or ({batch}, "
                f"{past + length}) (past + new tokens), got {tuple(attention_mask.shape)}")
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
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
    common = dict(positions=positions, token_mask=new_mask, writer=writer,
                  moe_losses=[] if collect_moe_losses else None)

    keys = new_mask if not past else torch.cat((cache.key_mask, new_mask), dim=1)
    # Without a mask or a cache nothing is padded: no need to read the mask back (a device sync).
    padded = (attention_mask is not None or past > 0) and not bool(keys.all())
    if not padded and structure_mask is None and window is None:
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
    if window is not None:
        key_positions = positions if not past else torch.cat((cache.positions, positions), 1)
        distance = positions[:, :, None] - key_positions[:, None, :]
        allowed = allowed & (distance.abs() <= window)
    # Every token sees itself, so a padding row never takes a softmax over nothing (NaN).
    diagonal = torch.zeros(length, past + length, dtype=torch.bool, device=device)
    diagonal[:, past:] = torch.eye(length, dtype=torch.bool, device=device)
    return AttentionContext(cos, sin, (allowed | diagonal)[:, None], False, **common)
