"""Key/value cache for incremental decoding of a recurrent-depth model.

Every unrolled layer application has its own slot: ("prelude", i), ("core", step, i) and
("coda", i). This is exact: a prefix cached at a fixed depth and then extended token by token
gives the same logits as one full forward pass at that depth.
"""

from __future__ import annotations

from typing import Hashable

import torch


class KVCache:
    """Past keys/values per slot, plus which past positions are real tokens (not padding)."""

    def __init__(self) -> None:
        self.layers: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}
        self.key_mask: torch.Tensor | None = None  # (B, past_len) bool, True = real token
        self.next_position: torch.Tensor | None = None  # (B,) RoPE position of the next token

    @property
    def seq_len(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    def update(self, slot: Hashable, k: torch.Tensor, v: torch.Tensor):
        """Append this call's k, v (B, H, T, D) to `slot` and return the full keys and values."""
        past = self.layers.get(slot)
        if past is None:
            if self.seq_len:
                raise ValueError(
                    f"the KV cache has no entry for layer {slot} although it holds {self.seq_len} "
                    "past tokens: decode with the same num_steps that filled the cache")
            full = (k, v)
        elif past[0].shape[2] != self.seq_len:
            raise ValueError(
                f"the KV cache entry for layer {slot} is stale (it was skipped by a call with "
                "fewer steps): decode with the same num_steps that filled the cache")
        else:
            full = (torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2))
        self.layers[slot] = full
        return full

    def commit(self, new_mask: torch.Tensor, new_positions: torch.Tensor) -> None:
        """Record this call's tokens once every layer has appended them."""
        self.key_mask = new_mask if self.key_mask is None else torch.cat(
            (self.key_mask, new_mask), dim=1)
        self.next_position = new_positions[:, -1] + 1

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers.values() for t in kv)

    def __len__(self) -> int:
        return len(self.layers)
