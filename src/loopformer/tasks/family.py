"""Relational family text (Chen 2026, CLUTRR-like): does a stated kinship follow from the facts?

The facts describe a consistent family tree in which every person has one parent (a rooted
forest, so siblings share their parent and nobody has a co-parent). A chain of K facts
(K = complexity) links two people A and B through the tree; each fact says "X is the
parent of Y .", "Y is the child of X ." or "X is the sibling of Y .". The chain descends
from the elder end one generation per parent fact, and may cross to a sibling after any
descent (a parent's children are all its children) or, for siblings, go up to the shared
parent and down again; so A is an ancestor of B, a descendant, or a sibling, as CLUTRR's
composition rules give it. Distractors are leaves attached to chain people (another child,
another sibling), each naming a new person; they never shorten the chain.

The query "A is the R of B ?" states parent (+1 generation), grandparent (+2), great-grand-
parent (+3, ...), child (-1), ..., or sibling (0). A negative's true relation lies 2 or 4
generations from the stated one, and stated and true relations follow one law whatever the
label. The text is classified from a CLS token with bidirectional attention (Chen 2026); the
facts arrive shuffled.

Version 3 closes two shortcuts of version 2 that read the label without following the chain
(found by lookup-table probes, tests/test_task_leaks.py): the counts of parent/child and
sibling facts (a chain of K facts from A down g generations has g vertical facts: with the
stated relation, 0.69), and the roles of A and B in the facts (whether each has a stated
parent, child or sibling: 0.91). Now the text holds K + 2 vertical and K + 2 sibling facts
(distractors make up the rest, two of them on each of A and B), and examples are kept with the
acceptance that makes both labels equally likely for every stated relation and roles of A and
B (as logic balances its surfaces).

`relation_targets` (a training signal, not in Chen 2026) labels every mention of a person with
A's relation to that person (generations above, 0 for a sibling, "A itself", "no direct
relation"), read by a per-position head: at step t, the people within t facts of A can know
theirs, so a chain followed part of the way already lowers the loss (`train_distractor_mix`:
another training aid, in train_set). `mention_targets` (another) labels each person's
mention in the facts A, B or neither: the lookup that binding two names to one fact needs
(docs/results.md, family).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field

import torch

from .base import Task, cls_batch, cls_position_labels
from .family_tree import UNRELATED, Tree, fact, leaves, lineage, sibling_path

NAMES = [f"n{i}" for i in range(40)]  # a chain of 12 facts and its distractors name <= 29
WORDS = ["<pad>", "<cls>", "is", "the", "of", ".", "?", "parent", "child", "grand", "great",
         "sibling"]
NAME_SET = set(NAMES)
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
    # per word: the relation target of a name (see relation_targets), -100 for other words
    targets: tuple[int, ...] = field(default=(), repr=False, compare=False)


def query_start(words: list[str]) -> int:
    """Where the query begins: after the last fact's "."."""
    return len(words) - words[::-1].index(".")


def surface(words: list[str]) -> tuple:
    """What is read without following the chain: the stated relation, and for each of A and
    B whether some fact makes them a parent, a child, a sibling."""
    query = words[query_start(words):]
    a, b = query[0], query[-2]
    roles = {a: [False] * 3, b: [False] * 3}
    converse = {"parent": "child", "child": "parent", "sibling": "sibling"}
    for i in range(0, len(words) - len(query), 7):
        x, _, _, relation, _, y, _ = words[i:i + 7]  # "x is the parent of y ."
        for person, role in ((x, relation), (y, converse[relation])):
            if person in roles:
                roles[person][("parent", "child", "sibling").index(role)] = True
    return tuple(query[3:-3]), *roles[a], *roles[b]


def shifts(offset: int, facts: int) -> list[int]:
    """The shifts that take `offset` to another offset a chain of `facts` facts can have."""
    return [s for s in SHIFTS if abs(offset + s) <= min(facts, MAX_OFFSET)]


def draw(complexity: int, rng: random.Random, distractors: int | None = None) -> FamilyExample:
    """One text of a chain of `complexity` facts, before the balancing of its surface, with
    the first `distractors` of its K + 4 distractor facts (None: all)."""
    # Offsets in reach, drawn in proportion to their number of shifts: the stationary law
    # of the random walk "move by a random shift", so a negative's true offset (stated +
    # shift) has the same law as the stated one and the query's words tell nothing.
    reach = range(-complexity, complexity + 1)
    stated = rng.choices(reach, [len(shifts(s, complexity)) for s in reach])[0]
    positive = rng.random() < 0.5
    true = stated if positive else stated + rng.choice(shifts(stated, complexity))
    moves = sibling_path(complexity, rng) if true == 0 else \
        lineage(abs(true), complexity, rng)
    people = rng.sample(NAMES, len(NAMES))
    chain, others = people[:complexity + 1], people[complexity + 1:]
    tree = Tree(chain[0])
    facts = []
    for x, move, y in zip(chain, moves, chain[1:]):
        facts.append(fact(x, move, y, rng))
        tree.add(x, move, y)
    # K + 2 vertical and K + 2 sibling facts in all, whatever the chain's make-up.
    vertical = sum(move != "side" for move in moves)
    extra = ["down"] * (complexity + 2 - vertical) + ["side"] * (2 + vertical)
    rng.shuffle(extra)
    facts += leaves(extra[:distractors], tree, (chain[0], chain[-1]), others, rng)
    rng.shuffle(facts)
    a, b = (chain[0], chain[-1]) if true >= 0 else (chain[-1], chain[0])
    words = [w for line in facts for w in line] + \
        [a, "is", "the", *relation_words(stated), "of", b, "?"]
    targets = tuple(tree.target(a, w) if w in tree.group else -100 for w in words)
    return FamilyExample(words, int(positive), complexity, targets)


def mentions(words: list[str]) -> list[int]:
    """Per word: 0 at a fact's mention of A, 1 of B, 2 of anyone else; -100 elsewhere."""
    query = query_start(words)
    a, b = words[query], words[-2]
    return [(0 if w == a else 1 if w == b else 2) if i < query and w in NAME_SET else -100
            for i, w in enumerate(words)]


@functools.cache  # one table per chain length, shared by every task object
def acceptance(complexity: int) -> dict:
    """Acceptance by (surface, label), from 20,000 free draws with a fixed seed."""
    rng = random.Random(complexity)
    counts = Counter((surface(ex.words), ex.label) for ex in
                     (draw(complexity, rng) for _ in range(20_000)))
    return {(face, label): min(counts[face, 0], counts[face, 1]) / count
            for (face, label), count in counts.items()}


class FamilyRelations(Task):
    name = "family"
    interface = "classifier"
    version = 3  # 0.4: true kinship in a one-parent tree (labels); 0.5: fact counts and roles
    vocab_size = len(VOCAB)
    num_classes = 2

    def __init__(self, train_complexities=(2, 3, 4, 5), test_complexities=tuple(range(2, 10)),
                 max_len: int = 256, relation_targets: bool = False,
                 train_distractor_mix: float = 0.0, mention_targets: bool = False):
        if not 0.0 <= train_distractor_mix <= 1.0:
            raise ValueError("family: train_distractor_mix (a fraction of the training texts) "
                             f"must lie in [0, 1], got {train_distractor_mix}")
        self.train_distractor_mix = train_distractor_mix
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len
        if relation_targets and mention_targets:
            raise ValueError("family: relation_targets and mention_targets both label the "
                             "mentions of people; choose one")
        self.relation_targets, self.mention_targets = relation_targets, mention_targets
        self.num_position_classes = UNRELATED + 1 if relation_targets else \
            3 if mention_targets else 0

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= MAX_OFFSET:
            raise ValueError(f"task 'family': chain length must lie in [1, {MAX_OFFSET}] (the "
                             f"relation words reach {MAX_OFFSET} generations), got {complexity}")

    def train_set(self, n: int, seed: int, complexities=None) -> list:
        """As every task's, except that a train_distractor_mix fraction of the texts keep 0
        to K + 4 of their distractor facts, uniformly, unbalanced (without distractors the
        roles of A and B may give the label away, but reading them takes finding A and B)."""
        mix = self.train_distractor_mix

        def sample(complexity: int, rng: random.Random) -> FamilyExample:
            if mix and rng.random() < mix:
                return draw(complexity, rng, rng.randint(0, complexity + 4))
            return self.sample(complexity, rng)

        return self.examples(n, complexities or self.train_complexities, seed, sample)

    def sample(self, complexity: int, rng: random.Random) -> FamilyExample:
        """A drawn text kept with probability min(P(surface, yes), P(surface, no)) /
        P(surface, label), the surface being the stated relation and the roles of A and B."""
        keep = acceptance(complexity)
        while True:
            example = draw(complexity, rng)
            if rng.random() < keep.get((surface(example.words), example.label), 0.0):
                return example

    def collate(self, examples) -> dict[str, torch.Tensor]:
        batch = cls_batch([[TOKEN[w] for w in ex.words] for ex in examples], examples,
                          TOKEN["<cls>"])
        if self.num_position_classes:
            batch["position_labels"] = cls_position_labels(batch, [
                ex.targets if self.relation_targets else mentions(ex.words) for ex in examples])
        return batch
