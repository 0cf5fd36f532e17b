"""Nested boolean logic (Chen 2026): evaluate an expression over T F & | ! ( ).

A depth-d expression is built recursively: a NOT of a depth d-1 expression, or an AND/OR whose
one operand has depth d-1 and whose sibling has depth k < d-1 drawn with weight 2^(d-1-k).
It is printed with the fewest parentheses the precedence NOT > AND > OR allows. Labels are
balanced 50/50 by rejection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, cls_batch

SYMBOLS = ["<pad>", "<cls>", "T", "F", "&", "|", "!", "(", ")"]
TOKEN = {s: i for i, s in enumerate(SYMBOLS)}
PRECEDENCE = {"|": 1, "&": 2, "!": 3, "leaf": 4}


@dataclass
class LogicExample:
    text: str  # e.g. "!(T|F)&T"
    label: int  # 1 = true
    complexity: int


def build(depth: int, rng: random.Random):
    """A random expression tree of exactly this nesting depth."""
    if depth == 0:
        return rng.choice((True, False))
    op = rng.choice("!&|")
    if op == "!":
        return ("!", build(depth - 1, rng))
    weights = [2 ** (depth - 1 - k) for k in range(depth)]
    sibling = build(rng.choices(range(depth), weights)[0], rng)
    deep = build(depth - 1, rng)
    return (op, deep, sibling) if rng.random() < 0.5 else (op, sibling, deep)


def evaluate(tree) -> bool:
    if isinstance(tree, bool):
        return tree
    if tree[0] == "!":
        return not evaluate(tree[1])
    left, right = evaluate(tree[1]), evaluate(tree[2])
    return (left and right) if tree[0] == "&" else (left or right)


def render(tree) -> str:
    if isinstance(tree, bool):
        return "T" if tree else "F"
    op = tree[0]
    parts = []
    for child in tree[1:]:
        text = render(child)
        child_op = "leaf" if isinstance(child, bool) else child[0]
        # NOT needs a parenthesised binary operand; AND needs one around an OR.
        if PRECEDENCE[child_op] < PRECEDENCE[op] or (op == "!" and child_op in "&|"):
            text = f"({text})"
        parts.append(text)
    return "!" + parts[0] if op == "!" else op.join(parts)


class NestedLogic(Task):
    name = "logic"
    interface = "classifier"
    vocab_size = len(SYMBOLS)
    num_classes = 2

    def __init__(self, train_complexities=tuple(range(1, 9)),
                 test_complexities=(2, 4, 6, 8, 10, 12, 14), max_len: int = 512):
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len

    def sample(self, complexity: int, rng: random.Random) -> LogicExample:
        want = rng.random() < 0.5
        while True:
            tree = build(complexity, rng)
            text = render(tree)
            if evaluate(tree) == want and len(text) + 1 <= self.max_len:
                return LogicExample(text, int(want), complexity)

    def collate(self, examples) -> dict[str, torch.Tensor]:
        return cls_batch([[TOKEN[c] for c in ex.text] for ex in examples], examples,
                         TOKEN["<cls>"])
