"""The buffers behind one KV-cache slot: entries written in place at an offset, grown
geometrically, read back as views (loopformer.model.cache builds on them)."""

from __future__ import annotations

import torch

Entries = tuple[torch.Tensor, ...]


def with_room(stored: Entries | None, like: Entries, end: int, keep: int,
               batch: int | None = None) -> Entries:
    """Buffers that hold `end` entries, keeping the first `keep` of `stored`: `stored` itself
    when it is large enough, else new ones of double size (amortised O(1) per token).
    `batch`: the rows to allocate when `like` holds only some of them."""
    if stored is not None and stored[0].shape[-2] >= end:
        return stored
    capacity = end if stored is None else max(end, 2 * stored[0].shape[-2])
    grown = tuple(t.new_empty((t.shape[0] if batch is None else batch, *t.shape[1:-2],
                               capacity, t.shape[-1])) for t in like)
    if stored is not None:
        for new, old in zip(grown, stored):
            new[..., :keep, :] = old[..., :keep, :]
    return grown


def write_entries(stored: Entries | None, entries: Entries, start: int) -> Entries:
    """Write `entries` at [start, start + n) of `stored` (grown if needed); return the
    buffers, which may be new."""
    end = start + entries[0].shape[-2]
    stored = with_room(stored, entries, end, keep=start)
    for buffer, entry in zip(stored, entries):
        buffer[..., start:end, :] = entry
    return stored


class SlotView:
    """The buffers of one region's blocks (for one core step) in one call, by layer. Plain
    tensor code, so compiled regions trace it; `start` stays a symbolic int (no recompilation
    per token). Buffers it allocates or grows reach the cache through the CacheWriter."""

    def __init__(self, entries: list[Entries | None], start: int,
                 rows: tuple[torch.Tensor, int] | None = None):
        self.entries, self.start, self.rows = entries, start, rows

    def select_rows(self, rows: torch.Tensor, batch: int) -> "SlotView":
        """The same buffers, written and read for batch rows `rows` (of `batch`) only."""
        return SlotView(self.entries, self.start, (rows, batch))  # shares the entries list

    def update(self, layer: int, entries: Entries) -> Entries:
        """Write this call's entries for block `layer`; return its past + new entries."""
        end = self.start + entries[0].shape[-2]
        index, batch = self.rows if self.rows is not None else (slice(None), None)
        stored = with_room(self.entries[layer], entries, end, self.start, batch)
        for buffer, entry in zip(stored, entries):
            buffer[index, ..., self.start:end, :] = entry
        self.entries[layer] = stored
        return tuple(buffer[index, ..., :end, :] for buffer in stored)
