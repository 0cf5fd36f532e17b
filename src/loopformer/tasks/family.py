"""Relational family text (Chen 2026, CLUTRR-like): does a stated kinship follow from the facts?

A chain of K+1 people (K = complexity) is stated as shuffled "X is the parent/child of Y ." facts
plus 2-4 distractor facts among people outside the chain. The query "A is the R of B ?" names
the generation offset between the chain's ends: parent (+1), grandparent (+2),
great-grandparent (+3, ...), child (-1), ..., or sibling (0). A negative shifts the true offset
by +-2 or +-4, which keeps its parity. The text is classified (true/false) from a CLS token
with bidirectional attention, as in Chen 2026; facts arrive shuffled, so causal attention
would let a fact see only the facts before it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, cls_batch

NAMES = [f"n{i}" for i in range(20)]
WORDS = ["<pad>", "<cls>", "is", "the", "of", ".", "?", "parent", "child", "grand", "great",
         "sibling"]
VOCAB = WORDS + NAMES
TOKEN = {w: i for i, w in enumerate(VOCAB)}
MAX_OFFSET = 12


def relation_words(offset: int) -> list[str]:
    """+1 parent, +2 grand parent, +3 great grand parent; negatives likewise with child."""
    if offset == 0:
        return ["sibling"]
    base = "parent" if offset > 0 else "child"
    size = abs(offset)
    return ["great"] * max(size - 2, 0) + (["grand"] if size >= 2 else []) + [base]


@dataclass
class FamilyExample:
    words: list[str]  # facts, then the query ending in "?"
    label: int  # 1 = the stated relation holds
    complexity: int


class FamilyRelations(Task):
    name = "family"
    interface = "classifier"
    vocab_size = len(VOCAB)
    num_classes = 2

    def __init__(self, train_complexities=(2, 3, 4, 5), test_complexities=tuple(range(2, 10)),
                 max_len: int = 160):
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= 15:
            raise ValueError(f"task 'family': chain length must lie in [1, 15] (20 names, 4 "
                             f"kept for distractors), got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> FamilyExample:
        people = rng.sample(NAMES, len(NAMES))
        chain, others = people[:complexity + 1], people[complexity + 1:]
        facts, offset = [], 0  # offset = generations from chain[-1] up to chain[0]
        for older, younger in zip(chain, chain[1:]):
            step = rng.choice((1, -1))  # +1: `older` is the parent of `younger`
            offset += step
            relation = "parent" if step == 1 else "child"
            facts.append([older, "is", "the", relation, "of", younger, "."])
        for _ in range(rng.randint(2, 4)):
            x, y = rng.sample(others, 2)
            facts.append([x, "is", "the", rng.choice(("parent", "child")), "of", y, "."])
        rng.shuffle(facts)
        positive = rng.random() < 0.5
        stated = offset
        if not positive:
            shifts = [s for s in (-4, -2, 2, 4) if abs(offset + s) <= MAX_OFFSET]
            stated = offset + rng.choice(shifts)
        query = [chain[0], "is", "the", *relation_words(stated), "of", chain[-1], "?"]
        words = [w for fact in facts for w in fact] + query
        return FamilyExample(words, int(positive), complexity)

    def collate(self, examples) -> dict[str, torch.Tensor]:
        return cls_batch([[TOKEN[w] for w in ex.words] for ex in examples], examples,
                         TOKEN["<cls>"])
