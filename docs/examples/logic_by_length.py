"""A logic run's held-out accuracy split by the expression's length in symbols, per depth
(docs/results.md, nested logic): whether a depth fails by its nesting or by its length.

    python logic_by_length.py runs/logic-quick --steps 12
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from loopformer.evaluation.scoring import is_correct
from loopformer.training.run import load_run, training_keys

BINS = ((1, 19), (20, 39), (40, 59), (60, 79), (80, 10_000))


@torch.no_grad()
def by_length(task, model, examples: list, steps: int, batch_size: int = 250) -> dict:
    """{(low, high): [right, total]} over the length bins."""
    counts = defaultdict(lambda: [0, 0])
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = task.collate(chunk)
        right = is_correct(model(batch, steps).logits[-1], batch["label"]).tolist()
        for ex, ok in zip(chunk, right):
            low_high = next(b for b in BINS if b[0] <= len(ex.text) <= b[1])
            counts[low_high][0] += int(ok)
            counts[low_high][1] += 1
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a logic run directory")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 10, 12, 14])
    parser.add_argument("--examples", type=int, default=1000, help="held-out, per depth")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task, model, _, train_cfg = load_run(args.run)
    if task.name != "logic":
        parser.error(f"{args.run} is a {task.name!r} run, not a logic run")
    exclude = training_keys(task, train_cfg)
    print(f"accuracy at {args.steps} steps by length in symbols (examples in brackets)")
    print("depth | " + " | ".join(f"{lo}-{hi}" if hi < 10_000 else f"{lo}+" for lo, hi in BINS))
    for depth in args.depths:
        examples = task.eval_set(depth, args.examples, train_cfg.seed, exclude)
        counts = by_length(task, model, examples, args.steps)
        cells = [f"{counts[b][0] / counts[b][1]:.2f} ({counts[b][1]})" if counts[b][1] else "-"
                 for b in BINS]
        print(f"{depth} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
