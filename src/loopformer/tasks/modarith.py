"""Modular arithmetic for grokking (Power et al. 2022; Nanda et al. 2023).

`a_1 + a_2 + ... + a_k = ?  (mod p)` with k = complexity operands (the classic task is k = 2).
The training set is a fixed fraction of the operand multisets with every order of each, and
the evaluation set is the rest, so validation accuracy measures generalisation to unseen pairs,
not memory: with ordered pairs split at random, (b, a) of a trained (a, b) is held out 70% of
the time at a 30% split, and a model that learns only that the sum is symmetric scores the
train fraction on held-out pairs without computing anything (version 1 did; 0.30 measured).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from .base import Task, answer_batch


@dataclass
class ModExample:
    operands: tuple[int, ...]
    answer: int
    complexity: int


class ModularArithmetic(Task):
    name = "modarith"
    interface = "lm"
    version = 2  # split by multiset (version 1: by ordered tuple)

    def __init__(self, modulus: int = 97, train_fraction: float = 0.4,
                 train_complexities=(2,), test_complexities=(2,)):
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        self.modulus, self.train_fraction = modulus, train_fraction
        self.plus, self.equals = modulus, modulus + 1  # tokens after the numbers 0..p-1
        self.vocab_size = self.num_classes = modulus + 2
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = 2 * max(self.test_complexities)

    def check_complexity(self, complexity: int) -> None:
        if not 2 <= complexity <= 3:
            raise ValueError(f"task 'modarith': operands must be 2 or 3, got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> ModExample:
        operands = tuple(rng.randrange(self.modulus) for _ in range(complexity))
        return ModExample(operands, sum(operands) % self.modulus, complexity)

    def _split(self, complexity: int, seed: int) -> tuple[list, list]:
        self.check_complexity(complexity)
        multisets = list(itertools.combinations_with_replacement(range(self.modulus),
                                                                 complexity))
        random.Random(seed).shuffle(multisets)
        cut = int(self.train_fraction * len(multisets))
        orders = lambda group: [ModExample(ops, sum(ops) % self.modulus, complexity)
                                for m in group for ops in sorted(set(
                                    itertools.permutations(m)))]
        return orders(multisets[:cut]), orders(multisets[cut:])

    def train_set(self, n: int, seed: int, complexities=None) -> list:
        """The fixed training fraction of all operand tuples (n is ignored: the split decides)."""
        return [ex for c in (complexities or self.train_complexities)
                for ex in self._split(c, seed)[0]]

    def eval_set(self, complexity: int, n: int, seed: int, exclude=frozenset()) -> list:
        """Up to n tuples the training set never holds (the split makes them disjoint)."""
        return self._split(complexity, seed)[1][:n]

    def collate(self, examples) -> dict[str, torch.Tensor]:
        rows = []
        for ex in examples:
            row = [ex.operands[0]]
            for a in ex.operands[1:]:
                row += [self.plus, a]
            rows.append(row + [self.equals])
        return answer_batch(rows, [ex.answer for ex in examples], examples)
