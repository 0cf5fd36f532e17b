"""A corpus encoded once into memory-mapped token files, split by document, read as packed
fixed-length sequences.

`encode_corpus` writes `DIR/train.bin` and `DIR/val.bin` (raw uint16 ids where the vocabulary
allows, else uint32; every document followed by END_OF_TEXT) and, last, `DIR/meta.json`, so a
directory with meta.json is complete. Every k-th document goes to validation (k =
round(1 / val_fraction), starting at seed mod k): the split is by document, reproducible, and
spread evenly through the corpus (a book's sections from beginning to end). `TokenSplit` maps a file without reading it; a sequence is a window of
seq_len + 1 tokens (inputs and next-token labels).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tokenizers import Tokenizer

from ..files import write_json_atomic
from .tokenizer import end_of_text_id

ENCODE_BATCH = 64  # documents per call to the (multi-threaded) batch encoder


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2 ** 16 else np.uint32)


def encode_corpus(docs: Iterable[str], tokenizer: Tokenizer, directory: Path,
                  val_fraction: float = 0.05, seed: int = 0) -> dict:
    """Encode `docs` into DIR/train.bin and DIR/val.bin; returns (and writes) the metadata."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
    end = end_of_text_id(tokenizer)
    stride = max(2, round(1 / val_fraction))
    counts = {"train": [0, 0], "val": [0, 0]}  # documents, tokens
    files = {name: open(directory / f"{name}.bin.tmp", "wb") for name in counts}
    try:
        index = 0
        for batch in _batches(docs, ENCODE_BATCH):
            for encoding in tokenizer.encode_batch(batch):
                name = "val" if index % stride == seed % stride else "train"
                ids = np.asarray([*encoding.ids, end], dtype=dtype)
                files[name].write(ids.tobytes())
                counts[name][0] += 1
                counts[name][1] += len(ids)
                index += 1
    finally:
        for f in files.values():
            f.close()
    if not counts["train"][0] or not counts["val"][0]:
        raise ValueError(f"the corpus has {index} document(s): too few to hold some out for "
                         "validation; add text or raise val_fraction")
    for name in counts:
        os.replace(directory / f"{name}.bin.tmp", directory / f"{name}.bin")
    meta = {"dtype": dtype.name, "val_fraction": val_fraction, "seed": seed,
            **{f"{name}_documents": c[0] for name, c in counts.items()},
            **{f"{name}_tokens": c[1] for name, c in counts.items()}}
    write_json_atomic(directory / "meta.json", meta)
    return meta


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def file_identity(files: list[Path]) -> list[str]:
    """What names a corpus of files: each one's path, size and modification time, so a
    changed file gets a new encoding."""
    return [f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files]


def cache_key(identity: list[str], tokenizer: Tokenizer, val_fraction: float, seed: int) -> str:
    """Names an encoding: the corpus, the tokenizer and the split."""
    digest = hashlib.sha256(tokenizer.to_str().encode())
    for line in identity:
        digest.update(f"{line}\n".encode())
    digest.update(f"{val_fraction}|{seed}".encode())
    return digest.hexdigest()[:16]


class TokenSplit:
    """One split's tokens, memory-mapped, as packed sequences of seq_len + 1 tokens."""

    def __init__(self, directory: Path, split: str, seq_len: int):
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        self.tokens = np.memmap(directory / f"{split}.bin", dtype=np.dtype(meta["dtype"]),
                                mode="r")
        self.seq_len = seq_len
        if len(self.tokens) < seq_len + 1:
            raise ValueError(f"the {split} split has {len(self.tokens)} tokens, fewer than one "
                             f"sequence of {seq_len} + 1: add text or shorten the sequences")

    def __len__(self) -> int:
        """Non-overlapping sequences (the last token of one is the first of the next)."""
        return (len(self.tokens) - 1) // self.seq_len

    def sequences(self, indices) -> torch.Tensor:
        """Sequences number `indices` of the packed split: (len(indices), seq_len + 1)."""
        starts = np.asarray(indices, dtype=np.int64) * self.seq_len
        return self._windows(starts)

    def sample(self, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        """Windows at random offsets (training): (batch_size, seq_len + 1)."""
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=batch_size)
        return self._windows(starts)

    def _windows(self, starts: np.ndarray) -> torch.Tensor:
        offsets = starts[:, None] + np.arange(self.seq_len + 1)
        return torch.from_numpy(self.tokens[offsets].astype(np.int64))
