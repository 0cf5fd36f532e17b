"""Timing helpers shared by the benchmarks: warm-up, repeats, median and spread."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Run fn warmup + repeats times; return the median and spread of the timed runs (s)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def text_run_windows(run, count: int):
    """A trained text run's model, training config and its first `count` validation windows
    ((count, seq_len + 1) token ids)."""
    from loopformer.training.run import load_text_run
    from loopformer.training.sources import TokenSource

    model, _, model_cfg, train_cfg = load_text_run(run)
    source = TokenSource(train_cfg, model_cfg, run)
    source.open(run)
    return model, train_cfg, source.val.sequences(range(min(len(source.val), count)))
