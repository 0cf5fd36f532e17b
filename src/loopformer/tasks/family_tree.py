"""The one-parent family tree a family text is drawn from: the chain's moves, its facts and
the distractor leaves, and the relation target of every person (family.py)."""

from __future__ import annotations

import random

# Per-position targets: A's offset over a person (|offset| <= 32: a chain and its leaves
# span fewer generations), then "A itself" and "no direct relation".
TARGET_OFFSETS = 32
SELF, UNRELATED = 2 * TARGET_OFFSETS + 1, 2 * TARGET_OFFSETS + 2


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


def fact(x: str, move: str, y: str, rng: random.Random) -> list[str]:
    """One fact for a move from x to y, in either of its phrasings."""
    if move == "side":
        first, second = (x, y) if rng.random() < 0.5 else (y, x)
        return [first, "is", "the", "sibling", "of", second, "."]
    parent, child = (x, y) if move == "down" else (y, x)
    if rng.random() < 0.5:
        return [parent, "is", "the", "parent", "of", child, "."]
    return [child, "is", "the", "child", "of", parent, "."]


class Tree:
    """The family as its facts are drawn: sibling groups, each with one parent (a person, or
    None while no fact names one)."""

    def __init__(self, root: str):
        self.group, self.parent, self.children = {}, [], {}  # children: a parent's group
        self.add_root(root)

    def add_root(self, person: str) -> None:
        self.group[person] = len(self.parent)
        self.parent.append(None)

    def add(self, x: str, move: str, y: str) -> None:
        """y, new, reached from x: "down" x's child, "up" x's parent, "side" x's sibling."""
        if move == "side":
            self.group[y] = self.group[x]
        elif move == "up":
            self.parent[self.group[x]] = y
            self.children[y] = self.group[x]
            self.add_root(y)
        elif x in self.children:
            self.group[y] = self.children[x]
        else:
            self.add_root(y)
            self.parent[-1] = x
            self.children[x] = self.group[y]

    def has_parent(self, person: str) -> bool:
        return self.parent[self.group[person]] is not None

    def ancestors(self, person: str) -> list[str]:
        line = []
        while (person := self.parent[self.group[person]]) is not None:
            line.append(person)
        return line

    def target(self, a: str, person: str) -> int:
        """The relation target of `person`: A's offset over them as a class, SELF or
        UNRELATED."""
        if person == a:
            return SELF
        if self.group[a] == self.group[person]:
            return TARGET_OFFSETS
        above, below = self.ancestors(person), self.ancestors(a)
        if a in above:
            return TARGET_OFFSETS + above.index(a) + 1
        if person in below:
            return TARGET_OFFSETS - below.index(person) - 1
        return UNRELATED


def leaves(moves: list[str], tree: Tree, ends: tuple[str, str], unnamed: list[str],
           rng: random.Random) -> list[list[str]]:
    """Distractor facts, one per move, each naming a new person, so that none links two named
    people. A "side" move makes the new person a sibling of someone named; a vertical one its
    child, or, half the time where that person's sibling group has no parent yet, its parent.
    The first four hang two at each end of the chain; then, one time in four while names
    last, the anchor is a new person outside the chain, else someone named but the ends."""
    facts = []
    for i, move in enumerate(moves):
        if i < 4:  # two at each end: A and B are then named in three facts, whatever the chain
            anchor = ends[i % 2]
        elif len(unnamed) >= 2 and rng.random() < 0.25:
            anchor = unnamed.pop()
            tree.add_root(anchor)
        else:
            anchor = rng.choice([person for person in tree.group if person not in ends])
        person = unnamed.pop()
        if move == "down" and not tree.has_parent(anchor) and rng.random() < 0.5:
            move = "up"
        facts.append(fact(anchor, move, person, rng))
        tree.add(anchor, move, person)
    return facts
