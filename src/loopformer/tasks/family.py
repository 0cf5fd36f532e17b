"""Relational family text (Chen 2026, CLUTRR-like): does a stated kinship follow from the facts?

The facts describe a consistent family tree in which every person has one parent (a rooted
forest, so siblings share their parent and nobody has a co-parent). A chain of K facts
(K = complexity) links two people A and B through the tree; each fact says "X is the
parent of Y .", "Y is the child of X ." or "X is the sibling of Y .". The chain descends
from the elder end one generation per parent fact, and may cross to a sibling after any
descent (a parent's children are all its children) or, for siblings, go up to the shared
parent and down again; so A is an ancestor of B, a descendant, or a sibling, as CLUTRR's
composition rules give it. Distractors are leaves attached to chain people (another child,
another sibling) and facts among people outside the chain; they never shorten the chain.

The query "A is the R of B ?" states parent (+1 generation), grandparent (+2), great-grand-
parent (+3, ...), child (-1), ..., or sibling (0). A negative's true relation lies 2 or 4
generations from the stated one, and stated and true relations follow one law whatever the
label: neither the query's words nor the chain's make-up alone tells the label. The text is classified from a CLS token with
bidirectional attention (Chen 2026); the facts arrive shuffled.
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
SHIFTS = (-4, -2, 2, 4)  # a negative's true offset minus the stated one


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


def lineage(generations: int, facts: int, rng: random.Random) -> list[str]:
    """Moves from an ancestor down to a descendant `generations` below it in `facts` facts:
    "down" (to a child) first, then downs and "side" moves (to a sibling) in any order."""
    later = ["down"] * (generations - 1) + ["side"] * (facts - generations)
    rng.shuffle(later)
    return ["down"] + later


def sibling_path(facts: int, rng: random.Random) -> list[str]:
    """Moves from a person to a sibling: sideways only, or sideways, up to the shared parent,
    down to another child, sideways (each part possibly empty)."""
    if facts < 2 or rng.random() < 1 / facts:
        return ["side"] * facts
    before = rng.randint(0, facts - 2)
    return ["side"] * before + ["up", "down"] + ["side"] * (facts - 2 - before)


class FamilyRelations(Task):
    name = "family"
    interface = "classifier"
    version = 2  # 0.4: true kinship in a one-parent tree (label fix)
    vocab_size = len(VOCAB)
    num_classes = 2

    def __init__(self, train_complexities=(2, 3, 4, 5), test_complexities=tuple(range(2, 10)),
                 max_len: int = 160):
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= 12:
            raise ValueError(f"task 'family': chain length must lie in [1, 12] (20 names: a "
                             f"chain of K facts names K + 1, the rest are distractors), got "
                             f"{complexity}")

    @staticmethod
    def shifts(offset: int, facts: int) -> list[int]:
        """The shifts that take `offset` to another offset a chain of `facts` facts can have."""
        return [s for s in SHIFTS if abs(offset + s) <= min(facts, MAX_OFFSET)]

    def sample(self, complexity: int, rng: random.Random) -> FamilyExample:
        # Offsets in reach, drawn in proportion to their number of shifts: the stationary law
        # of the random walk "move by a random shift", so a negative's true offset (stated +
        # shift) has the same law as the stated one. Neither the query's words nor the chain's
        # make-up (K - |true| sibling facts) then tells the label.
        reach = range(-min(complexity, MAX_OFFSET), min(complexity, MAX_OFFSET) + 1)
        stated = rng.choices(reach, [len(self.shifts(s, complexity)) for s in reach])[0]
        positive = rng.random() < 0.5
        true = stated if positive else stated + rng.choice(self.shifts(stated, complexity))
        moves = sibling_path(complexity, rng) if true == 0 else \
            lineage(abs(true), complexity, rng)
        people = rng.sample(NAMES, len(NAMES))
        chain, others = people[:complexity + 1], people[complexity + 1:]
        facts = [self.fact(x, move, y, rng) for x, move, y in zip(chain, moves, chain[1:])]
        # Leaves: another child of a chain person, or another sibling of one; then facts
        # among the people outside the chain. Each names a person not yet named.
        for extra in others[:rng.randint(2, 4)]:
            kind = rng.random()
            if kind < 0.6:
                facts.append(self.fact(rng.choice(chain), "down" if kind < 0.3 else "side",
                                       extra, rng))
            else:
                facts.append(self.fact(rng.choice(others[4:]), rng.choice(("down", "side")),
                                       extra, rng))
        rng.shuffle(facts)
        a, b = (chain[0], chain[-1]) if true >= 0 else (chain[-1], chain[0])
        query = [a, "is", "the", *relation_words(stated), "of", b, "?"]
        return FamilyExample([w for fact in facts for w in fact] + query, int(positive),
                             complexity)

    @staticmethod
    def fact(x: str, move: str, y: str, rng: random.Random) -> list[str]:
        """One fact for a move from x to y, in either of its phrasings."""
        if move == "side":
            first, second = (x, y) if rng.random() < 0.5 else (y, x)
            return [first, "is", "the", "sibling", "of", second, "."]
        parent, child = (x, y) if move == "down" else (y, x)
        if rng.random() < 0.5:
            return [parent, "is", "the", "parent", "of", child, "."]
        return [child, "is", "the", "child", "of", parent, "."]

    def collate(self, examples) -> dict[str, torch.Tensor]:
        return cls_batch([[TOKEN[w] for w in ex.words] for ex in examples], examples,
                         TOKEN["<cls>"])
