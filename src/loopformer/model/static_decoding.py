"""Decoding one token per call at fixed shapes, so that one compiled graph serves every token.

`generate` fills a KVCache with the prompt, then decodes each new token with
`LoopLM.decode_token`, which runs the prelude, every thinking step and the coda on one token:

- every cache slot is grown once to a fixed capacity (the prompt plus the new tokens, rounded
  up to a multiple of `CAPACITY_STEP`, so that a new prompt length reuses the graph);
- a block writes its entry in place at the position index (`index_copy_`, a tensor, not a
  Python int) and attends over the whole buffer through a key mask, so no shape changes from
  one token to the next and no value is read back to the host;
- the position, the index and the key mask move forward inside the call.

`compile_regions` compiles `decode_token` with `fullgraph=True` and static shapes: one graph
per (batch, capacity, depth), compiled once and reused by every later `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import KVCache, cache_slots
from .context import AttentionContext
from .depth import Depth
from .injection import init_state
from .slots import Entries

CAPACITY_STEP = 64


class IndexedSlotView:
    """A region's buffers at full capacity: writes the new token's entries at `index`
    (a (1,) long tensor) and hands attention the whole buffer (the key mask hides the rest)."""

    def __init__(self, entries: list[Entries], index: torch.Tensor):
        self.entries, self.index = entries, index

    def update(self, layer: int, entries: Entries) -> Entries:
        stored = self.entries[layer]
        for buffer, entry in zip(stored, entries):
            buffer.index_copy_(-2, self.index, entry)
        return stored


@dataclass
class DecodeState:
    """What one decoded token reads and moves forward (its tensors change in place) and
    where each region's blocks sit in `blocks`."""

    # The buffers of every block the depth unrolls, in cache_slots order (a compressed
    # cache's shared slot appears once per block that uses it). A tuple, not a dict keyed by
    # SlotKey, so that the compiled graph's guards check tensors only.
    blocks: tuple[Entries, ...]
    key_mask: torch.Tensor  # (B, capacity) bool: True = a real token is cached there
    positions: torch.Tensor  # (B, 1) RoPE position of the next token
    index: torch.Tensor  # (1,) long: the cache index the next token is written at
    first: tuple[int, int, int]  # where the prelude, core and coda blocks start in `blocks`
    core_layers: int  # blocks per core step

    def view(self, region: str, step: int, layers: int) -> IndexedSlotView:
        """What AttentionContext.at asks a cache writer for."""
        start = {"prelude": self.first[0], "core": self.first[1] + step * self.core_layers,
                 "coda": self.first[2]}[region]
        return IndexedSlotView(list(self.blocks[start:start + layers]), self.index)

    def context(self, rope) -> AttentionContext:
        """The attention inputs of the next token: it sees every cached real token and
        itself (written at `index` before attention reads the buffer)."""
        self.key_mask.index_fill_(1, self.index, True)
        cos, sin = rope(self.positions) if rope is not None else (None, None)
        return AttentionContext(cos, sin, self.key_mask[:, None, None, :], False,
                                self.positions, torch.ones_like(self.positions, dtype=torch.bool),
                                writer=self)

    def advance(self) -> None:
        self.positions += 1
        self.index += 1


class StaticDecoder:
    """Decodes tokens after a filled KVCache at fixed shapes (see the module docstring);
    `finish` records the decoded tokens in the cache as an ordinary call would."""

    def __init__(self, model, cache: KVCache, depth: Depth, new_tokens: int):
        self.model, self.cache, self.depth = model, cache, depth
        self.start = cache.seq_len
        capacity = -(-(self.start + new_tokens) // CAPACITY_STEP) * CAPACITY_STEP
        cfg = model.cfg
        slots = [cache.slot_for(key) for key in cache_slots(cfg, depth)]
        self.slots = set(slots)
        for slot in self.slots:
            cache.buffers[slot] = _grown(cache.buffers[slot], self.start, capacity)
        batch = cache.key_mask.shape[0]
        key_mask = cache.key_mask.new_zeros(batch, capacity)
        key_mask[:, :self.start] = cache.key_mask
        self.state = DecodeState(
            tuple(cache.buffers[slot] for slot in slots), key_mask,
            cache.next_position[:, None].clone(),
            torch.full((1,), self.start, dtype=torch.long, device=key_mask.device),
            (0, cfg.n_prelude, cfg.n_prelude + depth.total * cfg.n_core), cfg.n_core)
        self.decoded = 0

    @staticmethod
    def applies(model, cache: KVCache, depth: Depth) -> bool:
        """Whether every decoded token runs every slot of `depth` with no data-dependent step:
        a fixed depth, no learned halting, full attention, and a cache that holds every slot
        for every past token (as generate's prefill leaves it)."""
        cfg = model.cfg
        if (cfg.core != "recurrent" or cfg.halting != "none" or cfg.attention_window is not None
                or depth.rows is not None or cache.keep_first or not cache.seq_len):
            return False
        return all(cache.lengths.get(cache.slot_for(key)) == cache.seq_len
                   for key in cache_slots(cfg, depth))

    def step(self, tokens: torch.Tensor, initial_state: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, vocab) and final state (B, 1, d) of the next tokens (B,)."""
        if self.decoded + 1 > self.state.key_mask.shape[1] - self.start:
            raise ValueError("StaticDecoder has decoded as many tokens as it was built for")
        self.decoded += 1
        cfg = self.model.cfg
        if initial_state is None and cfg.state_init == "noise":  # drawn here, not in a graph
            like = self.model.embed.weight.new_empty(tokens.shape[0], 1, cfg.d_model)
            initial_state = init_state("noise", like, cfg.noise_std, generator)
        return self.model.decode_token(tokens[:, None], self.state, self.depth.total,
                                       initial_state)

    def finish(self) -> None:
        """Record the decoded tokens in the cache (lengths, key mask, positions)."""
        end = self.start + self.decoded
        for slot in self.slots:
            self.cache.lengths[slot] = end
        cache, batch = self.cache, self.state.key_mask.shape[0]
        new_positions = cache.next_position[:, None] + torch.arange(
            self.decoded, device=cache.positions.device)
        cache.record(torch.ones(batch, self.decoded, dtype=torch.bool,
                                device=cache.key_mask.device), new_positions)


def _grown(stored: Entries, keep: int, capacity: int) -> Entries:
    """Buffers of `capacity` entries holding the first `keep` of `stored`, zero after them:
    attention gives masked keys zero weight, and zero times a stale NaN would still be NaN."""
    grown = tuple(t.new_zeros((*t.shape[:-2], capacity, t.shape[-1])) for t in stored)
    for new, old in zip(grown, stored):
        new[..., :keep, :] = old[..., :keep, :]
    return grown
