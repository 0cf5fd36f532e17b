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
    """Keys and values per slot in preallocated buffers (B, kv_heads, capacity, head_dim).

    A decoding step writes its entries in place and attends to a view of the filled part, so
    it allocates nothing per step; a full buffer doubles its capacity (amortised O(1)).
    """

    def __init__(self, mode: str = "exact", core_slots: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"KVCache mode must be one of {MODES}, got {mode!r}")
        if core_slots is not None and core_slots < 1:
            raise ValueError(f"core_slots must be >= 1 or None, got {core_slots}")
        self.mode, self.core_slots = mode, core_slots
        self.fill_forward = mode == "latest" or core_slots is not None
        self._buffers: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lengths: dict[Hashable, int] = {}  # filled entries per slot
        self.key_mask: torch.Tensor | None = None  # (B, past_len) bool, True = real token
        self.positions: torch.Tensor | None = None  # (B, past_len) RoPE positions
        self._deepest: dict[int, Hashable] = {}  # core layer -> last slot written this call

    @property
    def seq_len(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    @property
    def next_position(self) -> torch.Tensor:
        return self.positions[:, -1] + 1

    @property
    def layers(self) -> dict[Hashable, tuple[torch.Tensor, torch.Tensor]]:
        """Every slot's filled keys and values (B, kv_heads, length, head_dim), as views."""
        return {slot: self._entries(slot, length) for slot, length in self._lengths.items()}

    def _entries(self, slot: Hashable, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self._buffers[slot]
        return k[:, :, :length], v[:, :, :length]

    def _slot(self, key: Hashable) -> Hashable:
        if self.core_slots is not None and key[0] == "core":
            return ("core", key[1] % self.core_slots, key[2])
        return key

    def _reserve(self, slot: Hashable, end: int, like: tuple[torch.Tensor, torch.Tensor],
                 keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's buffers with room for `end` entries, keeping the first `keep`."""
        stored = self._buffers.get(slot)
        if stored is None or stored[0].shape[2] < end:
            capacity = end if stored is None else max(end, 2 * stored[0].shape[2])
            grown = tuple(t.new_empty((*t.shape[:2], capacity, t.shape[3])) for t in like)
            if stored is not None:
                for new, old in zip(grown, stored):
                    new[:, :, :keep] = old[:, :, :keep]
            self._buffers[slot] = stored = grown
        return stored

    def _write(self, slot: Hashable, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write entries at [start, start + k.shape[2]), growing the slot's buffers if full."""
        end = start + k.shape[2]
        write_entries(self._reserve(slot, end, (k, v), keep=start), start, k, v)
        self._lengths[slot] = end

    def reserve(self, slots: list[Hashable], new_tokens: int) -> "SlotWriter | None":
        """Room for `new_tokens` more entries in each of `slots`, marked as written, and a
        SlotWriter that a compiled forward pass fills (see LoopLM.compile_regions). None when
        the cache cannot be written that way: an adaptive-depth mode, no past tokens, or a
        slot missing or stale; the eager path then handles (or explains) the call."""
        past = self.seq_len
        if self.fill_forward or not past or any(self._lengths.get(s) != past for s in slots):
            return None
        end = past + new_tokens
        for slot in slots:
            self._reserve(slot, end, self._buffers[slot], keep=past)
            self._lengths[slot] = end
        return SlotWriter({slot: self._buffers[slot] for slot in slots}, past)

    def _latest_below(self, key: Hashable) -> Hashable | None:
        """The slot holding past entries for a core slot no earlier token reached: the deepest
        one below it."""
        _, step, layer = key
        for below in range(step - 1, -1, -1):
            slot = self._slot(("core", below, layer))
            if self._lengths.get(slot, 0) >= self.seq_len:
                return slot
        return None

    def update(self, key: Hashable, k: torch.Tensor, v: torch.Tensor):
        """Add this call's k, v (B, H, T, D) to a slot; return the slot's full keys, values."""
        slot, past_len = self._slot(key), self.seq_len
        length = self._lengths.get(slot)
        if length is not None:
            # A slot written earlier in this call (compression, or the coda probed at every
            # step) has its new entries replaced, never appended twice.
            if length not in (past_len, past_len + k.shape[2]):
                raise ValueError(
                    f"the KV cache entry for layer {slot} is stale (it was skipped by a call with "
                    "fewer steps): decode with the same num_steps that filled the cache, or use "
                    "KVCache(mode='latest')")
        elif past_len:
            source = self._latest_below(key) if self.fill_forward and key[0] == "core" else None
            if source is None:
                raise ValueError(
                    f"the KV cache has no entry for layer {slot} although it holds {past_len} "
                    "past tokens: decode with the same num_steps that filled the cache, or use "
                    "KVCache(mode='latest') for adaptive depth")
            self._write(slot, 0, *self._entries(source, past_len))
        self._write(slot, past_len, k, v)
        if key[0] == "core":
            self._deepest[key[2]] = slot
        return self._entries(slot, past_len + k.shape[2])

    def commit(self, new_mask: torch.Tensor, new_positions: torch.Tensor) -> None:
        """Record this call's tokens once every layer has added them."""
        past_len, n_new = self.seq_len, new_mask.shape[1]
        if self.fill_forward:  # core slots this call did not reach get its deepest entries
            for slot, length in list(self._lengths.items()):
                if slot[0] == "core" and length == past_len:
                    deep_k, deep_v = self._entries(self._deepest[slot[2]], past_len + n_new)
                    self._write(slot, past_len, deep_k[:, :, past_len:], deep_v[:, :, past_len:])
        self._deepest.clear()
        cat = lambda old, new: new if old is None else torch.cat((old, new), dim=1)
        self.key_mask = cat(self.key_mask, new_mask)
        self.positions = cat(self.positions, new_positions)

    def truncate(self, length: int) -> None:
        """Forget every token after the first `length` (speculative decoding's rollback)."""
        if not 0 <= length <= self.seq_len:
            raise ValueError(f"cannot truncate a cache of {self.seq_len} tokens to {length}")
        self._lengths = {slot: min(n, length) for slot, n in self._lengths.items()}
        self.key_mask = self.key_mask[:, :length]
        self.positions = self.positions[:, :length]

    def num_bytes(self) -> int:
        """Memory held by the buffers, including the headroom of their geometric growth."""
        return sum(t.numel() * t.element_size() for kv in self._buffers.values() for t in kv)

    def __len__(self) -> int:
        return len(self._buffers)


def write_entries(buffers: tuple[torch.Tensor, torch.Tensor], start: int, k: torch.Tensor,
                  v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write k, v (B, H, T, D) into buffers at [start, start + T); return the filled views."""
    k_buffer, v_buffer = buffers
    end = start + k.shape[2]
    k_buffer[:, :, start:end] = k
    v_buffer[:, :, start:end] = v
    return k_buffer[:, :, :end], v_buffer[:, :, :end]


class SlotWriter:
    """KVCache.update without the bookkeeping, for buffers KVCache.reserve prepared: every
    slot is written at the same offset. Plain tensor code, so torch.compile traces it into the
    decoding graph (`start` stays a symbolic int: no recompilation per token)."""

    def __init__(self, buffers: dict[Hashable, tuple[torch.Tensor, torch.Tensor]], start: int):
        self.buffers, self.start = buffers, start

    def update(self, key: Hashable, k: torch.Tensor, v: torch.Tensor):
        return write_entries(self.buffers[key], self.start, k, v)
