"""Parity (Fan et al. 2024, "Looped transformers for length generalization"; PonderNet):
a string of n bits (n = complexity), predict whether it holds an odd number of ones.

The input is `<bos> b_1 ... b_n =` and the answer token is 0 or 1 at the `=` position. The
task asks for n + `extra_steps` thinking steps per example (TrainConfig.depth = "task"): a
looped causal model can absorb one bit per step (the state at a position after t steps can
hold the parity of the t bits before it, reading its left neighbour's state), so its depth
grows with the string, while a fixed-depth model has a fixed reach.

`running_targets` adds the parity of the bits so far as a target at every bit's position
(batch key "position_labels"): a denser training signal than the one answer, teaching the
same one-bit-per-step rule from its short cases; evaluation still scores the answer alone.

`due_steps` says when each position's parity is due: bit i's at step i + extra_steps - 1,
the answer's at n + extra_steps, the step count the task asks for (batch key "position_due").
The fixed-point penalty then spares a position's change in the two steps up to its due step,
where its parity arrives, and prices every other change: a position waiting for the parity
holds still however long it waits, so the parity finds the far positions of strings longer
than any trained one as it found the trained ones, and a heavier penalty no longer slows it
down (docs/results.md, parity).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, answer_batch

ZERO, ONE, BOS, EQUALS = 0, 1, 2, 3


@dataclass
class ParityExample:
    bits: tuple[int, ...]
    label: int  # 1 = odd number of ones
    complexity: int


class Parity(Task):
    name = "parity"
    interface = "lm"
    vocab_size = num_classes = 4

    def __init__(self, train_bits: int = 12, test_complexities=(4, 8, 12, 16, 20, 24, 32),
                 extra_steps: int = 2, max_bits: int = 64, running_targets: bool = False,
                 due_steps: bool = False):
        if not 1 <= train_bits <= max_bits or extra_steps < 0:
            raise ValueError(f"parity: train_bits must lie in [1, max_bits = {max_bits}] and "
                             f"extra_steps be >= 0, got {train_bits} and {extra_steps}")
        if due_steps and extra_steps < 1:
            raise ValueError("parity: due_steps needs extra_steps >= 1 (bit i's parity is due "
                             f"at step i + extra_steps - 1), got {extra_steps}")
        self.train_complexities = tuple(range(1, train_bits + 1))
        self.test_complexities = tuple(test_complexities)
        self.extra_steps, self.max_bits = extra_steps, max_bits
        self.running_targets, self.due_steps = running_targets, due_steps
        self.max_len = max_bits + 2

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= self.max_bits:
            raise ValueError(f"task 'parity': bits must lie in [1, {self.max_bits}] "
                             f"(max_bits), got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> ParityExample:
        bits = tuple(rng.randrange(2) for _ in range(complexity))
        return ParityExample(bits, sum(bits) % 2, complexity)

    def thinking_steps(self, complexity: torch.Tensor) -> torch.Tensor:
        """n + extra_steps: one step per bit, and a margin for the ends."""
        return complexity + self.extra_steps

    def collate(self, examples) -> dict[str, torch.Tensor]:
        batch = answer_batch([[BOS, *ex.bits, EQUALS] for ex in examples],
                             [ex.label for ex in examples], examples)
        if self.running_targets:  # left-padded like the inputs; -100: no target
            labels = torch.full_like(batch["input_ids"], -100)
            for row, ex in enumerate(examples):
                running = torch.tensor(ex.bits).cumsum(0) % 2
                labels[row, -1 - len(ex.bits):-1] = running
            batch["position_labels"] = labels
        if self.due_steps:  # left-padded like the inputs; 0: BOS and padding, nothing due
            due = torch.zeros_like(batch["input_ids"])
            for row, ex in enumerate(examples):
                n = len(ex.bits)
                due[row, -1 - n:] = torch.arange(1, n + 2) + self.extra_steps - 1
            batch["position_due"] = due
        return batch
