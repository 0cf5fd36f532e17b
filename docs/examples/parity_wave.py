"""How a parity run's answer travels along the string, step by step (docs/results.md, parity).

A one-bit-per-step model holds the parity of bits 1..i at bit i's position once the parity has
reached it. For held-out strings of n bits the script prints two tables, one row per step:
how often the LM head, read at each bit's position, gives the running parity (the wave), and
the mean relative change of each position's state in that step, ||s_t - s_(t-1)|| / ||s_t||
(in %). A position ahead of the wave has nothing to do; if its state keeps changing there
(drift), it meets the parity in a state no trained position was ever in.

    python parity_wave.py runs/parity-quick --bits 24 --steps 32
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from loopformer.model.observers import StateCollector
from loopformer.training.run import load_run


@torch.no_grad()
def wave(task, model, bits: int, steps: int, examples: int, seed: int):
    """(steps, bits) share of strings whose running parity is read right at each bit, and
    (steps - 1, bits) mean relative state change of each bit's position from step 2 on."""
    rng = random.Random(seed)
    strings = [task.sample(bits, rng) for _ in range(examples)]
    batch = task.collate(strings)
    collector = StateCollector()
    model(batch, steps, observers=[collector])
    _, ctx = model.embed_inputs(batch)
    read = torch.stack([model.position_readout(model.backbone.decode(state, ctx)).argmax(-1)
                        for state in collector.states])[:, :, -1 - bits:-1]
    running = torch.tensor([s.bits for s in strings]).cumsum(1) % 2
    right = (read == running).float().mean(1)
    states = torch.stack(collector.states)[:, :, -1 - bits:-1]  # (steps, B, bits, d)
    change = (states[1:] - states[:-1]).norm(dim=-1) / states[1:].norm(dim=-1).clamp_min(1e-6)
    return right, change.mean(1)


def print_table(title: str, rows: torch.Tensor, first_step: int, digits: int) -> None:
    print(title)
    print("step | " + " ".join(f"{i:>4}" for i in range(1, rows.shape[1] + 1)))
    for step, row in enumerate(rows, first_step):
        print(f"{step:>4} | " + " ".join(f"{100 * value:4.{digits}f}" for value in row))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a parity run directory")
    parser.add_argument("--bits", type=int, default=24)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)
    task, model, _, _ = load_run(args.run)
    if task.name != "parity":
        parser.error(f"{args.run} is a {task.name!r} run, not a parity run")
    model.eval()
    right, change = wave(task, model, args.bits, args.steps, args.examples, args.seed)
    print_table(f"running parity read right at each bit (%), {args.bits}-bit strings",
                right, 1, 0)
    print()
    print_table("relative state change of each bit's position in the step (%)", change, 2, 1)


if __name__ == "__main__":
    main()
