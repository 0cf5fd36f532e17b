"""Key/value cache for incremental decoding of a recurrent-depth model.

Every unrolled block has a slot, a `SlotKey(region, step, layer)`: ("prelude", 0, i),
("core", t, i) for core step t, ("coda", 0, i). `cache_slots(cfg, depth)` lists them.

- `mode="exact"` (default): one slot per core step. A prefix cached at a fixed depth and then
  extended token by token gives the same logits as one full forward pass at that depth; using
  a slot that earlier tokens did not fill raises an error.
- `mode="latest"` (Huginn's fallback for adaptive depth): a token that stopped early has no
  entry for the deeper steps that a later token runs; it is represented there by its deepest
  entry. Every core slot is kept at full length by copying each token's deepest entry forward.
- `core_slots=N` ("compress-sN" in Huginn): core step t uses slot t mod N, and a token's entry
  in a slot is the one of its last step that mapped there. Memory no longer grows with the
  number of steps. Implies the latest fallback for slots a token never reached.
  `core_slots=1` keeps each token's last step only (Ouro's "last-loop" reuse); with
  `keep="first"` it keeps its first step instead ("first-loop"): every later token's every step
  attends to what earlier tokens wrote at step 0. `KVCache.policy(name)` names them all.

Each call gets its own `CacheWriter` (`KVCache.writer`): it checks and prepares each slot the
first time the call uses it, and hands the blocks of a region a `SlotView`, which writes the
new entries at the call's offset. Within one call a slot may be written more than once (step t
and t + N under compression, or the coda when an exit criterion probes every step): the new
tokens' entries are then replaced, never appended twice. What a slot holds is up to the
attention that writes it: any tuple of tensors with the sequence on dim -2.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch

from ..config import ModelConfig
from .depth import Depth
from .slots import Entries, SlotView, with_room, write_entries

MODES = ("exact", "latest")


class SlotKey(NamedTuple):
    region: str  # "prelude" | "core" | "coda"
    step: int  # core step; 0 for the prelude and the coda
    layer: int  # block index within the region


def cache_slots(cfg: ModelConfig, depth: Depth) -> list[SlotKey]:
    """The slots a forward pass of this config at this depth writes, in order."""
    steps = depth.total if cfg.core == "recurrent" else cfg.fixed_depth
    return ([SlotKey("prelude", 0, i) for i in range(cfg.n_prelude)]
            + [SlotKey("core", t, i) for t in range(steps) for i in range(cfg.n_core)]
            + [SlotKey("coda", 0, i) for i in range(cfg.n_coda)])


class KVCache:
    """Entries per slot in preallocated buffers (..., capacity, features).

    A decoding step writes its entries in place and attends to a view of the filled part, so
    it allocates nothing per step; a full buffer doubles its capacity.
    """

    def __init__(self, mode: str = "exact", core_slots: int | None = None,
                 keep: str = "last") -> None:
        if mode not in MODES:
            raise ValueError(f"KVCache mode must be one of {MODES}, got {mode!r}")
        if core_slots is not None and core_slots < 1:
            raise ValueError(f"core_slots must be >= 1 or None, got {core_slots}")
        if keep not in ("last", "first") or (keep == "first" and core_slots != 1):
            raise ValueError(f"keep must be 'last', or 'first' with core_slots=1, got "
                             f"keep={keep!r} with core_slots={core_slots}")
        self.mode, self.core_slots, self.keep_first = mode, core_slots, keep == "first"
        self.fill_forward = mode == "latest" or core_slots is not None
        self.buffers: dict[SlotKey, Entries] = {}
        self.lengths: dict[SlotKey, int] = {}  # filled entries per slot
        self.key_mask: torch.Tensor | None = None  # (B, past_len) bool, True = real token
        self.positions: torch.Tensor | None = None  # (B, past_len) RoPE positions

    @classmethod
    def policy(cls, name: str) -> "KVCache":
        """A cache by name: "exact", "latest", "compress-sN" (N core slots), "last-step"
        (one slot, each token's last step) or "first-step" (one slot, its first step)."""
        if name in MODES:
            return cls(mode=name)
        if name in ("last-step", "first-step"):
            return cls(core_slots=1, keep=name.split("-")[0])
        if name.startswith("compress-s") and name[len("compress-s"):].isdigit():
            return cls(core_slots=int(name[len("compress-s"):]))
        raise ValueError(f"unknown cache policy {name!r}; choose exact, latest, compress-sN, "
                         "last-step or first-step")

    @property
    def seq_len(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.shape[1]

    @property
    def next_position(self) -> torch.Tensor:
        return self.positions[:, -1] + 1

    @property
    def layers(self) -> dict[SlotKey, Entries]:
        """Every slot's filled entries, as views."""
        return {slot: self.entries(slot, length) for slot, length in self.lengths.items()}

    def entries(self, slot: SlotKey, length: int) -> Entries:
        return tuple(t[..., :length, :] for t in self.buffers[slot])

    def slot_for(self, key: SlotKey) -> SlotKey:
        if self.core_slots is not None and key.region == "core":
            return key._replace(step=key.step % self.core_slots)
        return key

    def writer(self, new_tokens: int, slots: Iterable[SlotKey] | None = None) -> "CacheWriter":
        """A writer for one call adding `new_tokens`. `slots`: prepare them all now, with room
        for the new entries, so that the call itself only writes tensors (what a compiled
        decoding graph needs); otherwise each slot is prepared when the call first uses it."""
        writer = CacheWriter(self, new_tokens)
        if slots is not None:
            writer.reserve(slots)
        return writer

    def latest_below(self, key: SlotKey) -> SlotKey | None:
        """The slot holding past entries for a core step no earlier token reached: the
        deepest one below it."""
        for below in range(key.step - 1, -1, -1):
            source = self.slot_for(key._replace(step=below))
            if self.lengths.get(source, 0) >= self.seq_len:
                return source
        return None

    def commit(self, writer: "CacheWriter", new_mask: torch.Tensor,
               new_positions: torch.Tensor) -> None:
        """Record the call's tokens once every block has written them."""
        writer.flush()
        past, end = writer.start, writer.end
        if writer.row_steps is not None:
            self._fill_stopped_rows(writer)
        for slot, first in writer.first_step.items():  # keep="first": restore step 0's entries
            self.buffers[slot] = write_entries(self.buffers[slot], first, past)
        if self.fill_forward:  # core slots the call did not reach get its deepest entries
            for slot, length in list(self.lengths.items()):
                if slot.region == "core" and length == past:
                    deepest = self.entries(writer.deepest[slot.layer], end)
                    self.buffers[slot] = write_entries(self.buffers[slot],
                                                tuple(t[..., past:, :] for t in deepest), past)
                    self.lengths[slot] = end
        self.record(new_mask, new_positions)

    def record(self, new_mask: torch.Tensor, new_positions: torch.Tensor) -> None:
        """Append new tokens' key mask and positions (B, n) once their entries are written."""
        cat = lambda old, new: new if old is None else torch.cat((old, new), dim=1)
        self.key_mask = cat(self.key_mask, new_mask)
        self.positions = cat(self.positions, new_positions)

    def _fill_stopped_rows(self, writer: "CacheWriter") -> None:
        """Rows that left the loop before its last step (all their tokens had exited) wrote
        no entries for the later steps; each gets its deepest entry there (the latest
        fallback), as when a batch of that row alone ends the loop early."""
        steps, past, end = writer.row_steps, writer.start, writer.end
        for slot in writer.prepared:
            missing = steps <= slot.step  # steps 0 .. steps-1 of a row wrote slots 0 .. steps-1
            if slot.region != "core" or not bool(missing.any()):
                continue
            for deepest in steps[missing].unique().tolist():
                rows = (missing & (steps == deepest)).nonzero().squeeze(1)
                source = self.buffers[self.slot_for(SlotKey("core", deepest - 1, slot.layer))]
                for target, entries in zip(self.buffers[slot], source):
                    target[rows, ..., past:end, :] = entries[rows, ..., past:end, :]

    def truncate(self, length: int) -> None:
        """Forget every token after the first `length` (speculative decoding's rollback)."""
        if not 0 <= length <= self.seq_len:
            raise ValueError(f"cannot truncate a cache of {self.seq_len} tokens to {length}")
        self.lengths = {slot: min(n, length) for slot, n in self.lengths.items()}
        self.key_mask = self.key_mask[:, :length]
        self.positions = self.positions[:, :length]

    def nbytes(self) -> int:
        """Memory held by the buffers, including the headroom of their geometric growth."""
        return sum(t.numel() * t.element_size() for kv in self.buffers.values() for t in kv)

    def __len__(self) -> int:
        return len(self.buffers)


class CacheWriter:
    """One call's access to a KVCache: prepares each slot once (checks that it holds every
    past token, or fills it by the latest fallback) and hands out SlotViews."""

    def __init__(self, cache: KVCache, new_tokens: int):
        self.cache, self.start, self.end = cache, cache.seq_len, cache.seq_len + new_tokens
        self.prepared: set[SlotKey] = set()
        self.deepest: dict[int, SlotKey] = {}  # core layer -> the slot of its deepest step
        self.reserved = False  # every slot prepared by reserve(): view() only looks up
        self.handed_out: list[tuple[list[SlotKey], SlotView]] = []
        self.first_step: dict[SlotKey, Entries] = {}  # keep="first": the new tokens' step 0
        # (B,) core steps each batch row ran, set by the core when rows stopped early
        self.row_steps: torch.Tensor | None = None

    def view(self, region: str, step: int, layers: int) -> SlotView:
        keys = [SlotKey(region, step, layer) for layer in range(layers)]
        buffers = self.cache.buffers
        if self.reserved:  # only lookups: what a compiled decoding graph traces
            return SlotView([buffers[self.cache.slot_for(key)] for key in keys], self.start)
        self.flush()
        slots = [self._prepare(key) for key in keys]
        if self.cache.keep_first and region == "core" and step > 0:
            for slot in slots:  # step 0 has written; later steps overwrite the new entries
                if slot not in self.first_step:
                    self.first_step[slot] = tuple(
                        t[..., self.start:self.end, :].clone() for t in buffers[slot])
        view = SlotView([buffers.get(slot) for slot in slots], self.start)
        self.handed_out.append((slots, view))
        return view

    def flush(self) -> None:
        """Store in the cache the buffers that views allocated or grew. (A view holds only
        its own layers' buffers, so a compiled region's guards do not see the cache grow.)"""
        for slots, view in self.handed_out:
            for slot, stored in zip(slots, view.entries):
                if stored is not None:
                    self.cache.buffers[slot] = stored
        self.handed_out.clear()

    def reserve(self, keys: Iterable[SlotKey]) -> None:
        """Prepare every slot and give it room for the new entries now."""
        for key in keys:
            slot = self._prepare(key)
            if slot not in self.cache.buffers:
                raise ValueError("KVCache.writer(slots=...) needs a cache that holds past "
                                 "tokens: the first call allocates the buffers")
            stored = self.cache.buffers[slot]
            self.cache.buffers[slot] = with_room(stored, stored, self.end, keep=self.start)
        self.reserved = True

    def _prepare(self, key: SlotKey) -> SlotKey:
        cache, past = self.cache, self.start
        slot = cache.slot_for(key)
        if slot.region == "core":
            self.deepest[slot.layer] = slot
        if slot in self.prepared:
            return slot
        length = cache.lengths.get(slot)
        if length is None and past:
            source = cache.latest_below(key) if cache.fill_forward and \
                key.region == "core" else None
            if source is None:
                raise ValueError(
                    f"the KV cache has no entry for layer {tuple(slot)} although it holds "
                    f"{past} past tokens: decode with the same num_steps that filled the cache, "
                    "or use KVCache(mode='latest') for adaptive depth")
            cache.buffers[slot] = write_entries(None, cache.entries(source, past), 0)
        elif length is not None and length != past:
            raise ValueError(
                f"the KV cache entry for layer {tuple(slot)} is stale (it was skipped by a call "
                "with fewer steps): decode with the same num_steps that filled the cache, or "
                "use KVCache(mode='latest')")
        cache.lengths[slot] = self.end
        self.prepared.add(slot)
        return slot
