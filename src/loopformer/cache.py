"""Key/value cache for incremental decoding of a recurrent-depth model.

Every unrolled layer application has a slot: ("prelude", i), ("core", step, i), ("coda", i).

- `mode="exact"` (default): one slot per core step. A prefix cached at a fixed depth and then
  extended token by token gives the same logits as one full forward pass at that depth; using
  a slot that earlier tokens did not fill raises an error.
- `mode="latest"` (Huginn's fallback for adaptive depth): a token that stopped early has no
  entry for the deeper steps that a later token runs; it is represented there by its deepest
  entry. Every core slot is kept at full length by copying each token's deepest entry forward.
- `core_slots=N` ("compress-sN" in Huginn): core step t uses slot t mod N, and a token's entry
  in a slot is the one of its last step that mapped there. Memory no longer grows with the
  number of steps. Implies the latest fallback for slots a token never reached.

Within one call a slot may be written more than once (step t and t + N under compression, or
the coda when an exit criterion probes every step): the new tokens' entries are then replaced,
never appended twice.
"""

from __future__ import annotations

from typing import Hashable

import torch

MODES = ("exact", "latest")


class KVCache:
    def __init__(self, mode: str = "exact", core_slots: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"KVCache mode must be one of {MODES}, got {mode!r}")
        if core_slots is not None and core_slots < 1:
            raise ValueError(f"core_slots must be >= 1 or None, got {core_slots}")
        self.mode, self.core_slots = mode, core_slots
        self.fill_forward = mode == "latest" or core_slots is not None
        self.layers: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}
        self.key_mask: torch.Tensor | None = None  # (B, past_len) bool, True = real token
        self.positions: torch.Tensor | None = None  # (B, past_len) RoPE positions
        self._deepest: dict[int, Hashable] = {}  # core layer -> last slot written this call

    @property
    def seq_len(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    @property
    def next_position(self) -> torch.Tensor:
        return self.positions[:, -1] + 1

    def _slot(self, key: Hashable) -> Hashable:
        if self.core_slots is not None and key[0] == "core":
            return ("core", key[1] % self.core_slots, key[2])
        return key

    def _latest_below(self, key: Hashable):
        """Past entries for a core slot no earlier token reached: the deepest one below it."""
        _, step, layer = key
        for below in range(step - 1, -1, -1):
            stored = self.layers.get(self._slot(("core", below, layer)))
            if stored is not None and stored[0].shape[2] >= self.seq_len:
                return stored[0][:, :, :self.seq_len], stored[1][:, :, :self.seq_len]
        return None

    def update(self, key: Hashable, k: torch.Tensor, v: torch.Tensor):
        """Add this call's k, v (B, H, T, D) to a slot; return the slot's full keys, values."""
        slot, past_len = self._slot(key), self.seq_len
        stored = self.layers.get(slot)
        past = None
        if stored is not None:
            length = stored[0].shape[2]
            if length == past_len + k.shape[2] or length == past_len:
                past = (stored[0][:, :, :past_len], stored[1][:, :, :past_len])
            else:
                raise ValueError(
                    f"the KV cache entry for layer {slot} is stale (it was skipped by a call with "
                    "fewer steps): decode with the same num_steps that filled the cache, or use "
                    "KVCache(mode='latest')")
        elif past_len:
            past = self._latest_below(key) if self.fill_forward and key[0] == "core" else None
            if past is None:
                raise ValueError(
                    f"the KV cache has no entry for layer {slot} although it holds {past_len} "
                    "past tokens: decode with the same num_steps that filled the cache, or use "
                    "KVCache(mode='latest') for adaptive depth")
        full = (k, v) if past is None or past_len == 0 else (
            torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2))
        self.layers[slot] = full
        if key[0] == "core":
            self._deepest[key[2]] = slot
        return full

    def commit(self, new_mask: torch.Tensor, new_positions: torch.Tensor) -> None:
        """Record this call's tokens once every layer has added them."""
        n_new = new_mask.shape[1]
        if self.fill_forward:  # core slots this call did not reach get its deepest entries
            for slot, (k, v) in list(self.layers.items()):
                if slot[0] == "core" and k.shape[2] == self.seq_len:
                    dk, dv = self.layers[self._deepest[slot[2]]]
                    self.layers[slot] = (torch.cat((k, dk[:, :, -n_new:]), dim=2),
                                         torch.cat((v, dv[:, :, -n_new:]), dim=2))
        self._deepest.clear()
        cat = lambda old, new: new if old is None else torch.cat((old, new), dim=1)
        self.key_mask = cat(self.key_mask, new_mask)
        self.positions = cat(self.positions, new_positions)

    def truncate(self, length: int) -> None:
        """Forget every token after the first `length` (speculative decoding's rollback)."""
        if not 0 <= length <= self.seq_len:
            raise ValueError(f"cannot truncate a cache of {self.seq_len} tokens to {length}")
        self.layers = {s: (k[:, :, :length], v[:, :, :length]) for s, (k, v) in
                       self.layers.items()}
        self.key_mask = self.key_mask[:, :length]
        self.positions = self.positions[:, :length]

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers.values() for t in kv)

    def __len__(self) -> int:
        return len(self.layers)
