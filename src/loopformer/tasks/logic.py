"""Nested boolean logic (Chen 2026): evaluate an expression over T F & | ! ( ).

A depth-d expression is built recursively: a NOT of a depth d-1 expression, or an AND/OR whose
one operand has depth d-1 and whose sibling has depth k < d-1 drawn with weight 2^(d-1-k).
It is printed with the fewest parentheses the precedence NOT > AND > OR allows. Labels are
balanced 50/50 by rejection.

Chen's weights keep the trained depths short (depth 8: 26 symbols at the median, 52 at the
99th percentile; depth 14: 49 and 90), and a model trained on them fails at depth 14 by length,
not by nesting (docs/results.md). `train_length_mix` draws that fraction of the training
expressions with uniform sibling weights instead: the same depths, longer (depth 8: 47 and
111). Evaluation always uses Chen's weights.

`operand_targets` labels the last symbol of every operand with the operand's value (batch key
"position_labels"; where several operands end at one symbol, the outermost, chains of one
operator read left to right): every subexpression becomes a target of its own, a curriculum
inside each expression, as parity's running targets are. The whole expression's value lands
on its last symbol; the CLS readout is still what is evaluated.

With TrainConfig.depth = "task" an expression of depth d gets d + `extra_steps` thinking
steps (one per level of nesting), where a draw from a fixed range gives a deep expression as
few steps as a shallow one.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch

from .base import Task, cls_batch, cls_position_labels

SYMBOLS = ["<pad>", "<cls>", "T", "F", "&", "|", "!", "(", ")"]
TOKEN = {s: i for i, s in enumerate(SYMBOLS)}
PRECEDENCE = {"|": 1, "&": 2, "!": 3, "leaf": 4}


@dataclass
class LogicExample:
    text: str  # e.g. "!(T|F)&T"
    label: int  # 1 = true
    complexity: int


def build(depth: int, rng: random.Random, sibling_base: float = 2.0):
    """A random expression tree of exactly this nesting depth; a sibling's depth k < depth - 1
    has weight sibling_base^(depth-1-k) (2: Chen's; 1: uniform, longer expressions)."""
    if depth == 0:
        return rng.choice((True, False))
    op = rng.choice("!&|")
    if op == "!":
        return ("!", build(depth - 1, rng, sibling_base))
    weights = [sibling_base ** (depth - 1 - k) for k in range(depth)]
    sibling = build(rng.choices(range(depth), weights)[0], rng, sibling_base)
    deep = build(depth - 1, rng, sibling_base)
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


def operand_values(text: str) -> list[int]:
    """Per symbol: the value (1/0) of the outermost operand ending there, -100 where none ends
    (an operator or an opening parenthesis); a parenthesised operand ends at its ")". Parsed
    from the text with the task's precedence, so that equal texts get equal targets whichever
    way their tree associated."""
    return [-100 if end is None else int(end[0]) for end in operands(text)]


def operand_heights(text: str) -> list[int | None]:
    """Per symbol: the height of the outermost operand ending there (None where none ends):
    literals 0; a NOT, or a chain of one operator, one more than its highest operand;
    parentheses add nothing."""
    return [None if end is None else end[1] for end in operands(text)]


def operands(text: str) -> list[tuple[bool, int] | None]:
    """Per symbol: (value, height) of the outermost operand ending there, or None."""
    marks: list[list[tuple[bool, int]]] = [[] for _ in text]  # operands ending here, inner first
    pos = 0

    def mark(operand: tuple[bool, int]) -> tuple[bool, int]:
        marks[pos - 1].append(operand)
        return operand

    def chain(operator: str, operand) -> tuple[bool, int]:  # a | b | c, read left to right
        nonlocal pos
        value, highest = result = operand()
        while pos < len(text) and text[pos] == operator:
            pos += 1
            right, right_height = operand()
            highest = max(highest, right_height)
            value = (value or right) if operator == "|" else (value and right)
            result = mark((value, highest + 1))  # the whole chain is one level
        return result

    def expression() -> tuple[bool, int]:  # AND binds tighter than OR
        return chain("|", lambda: chain("&", unary))

    def unary() -> tuple[bool, int]:
        nonlocal pos
        pos += 1
        if text[pos - 1] == "!":
            value, height = unary()
            return mark((not value, height + 1))
        if text[pos - 1] == "(":
            group = expression()
            marks[pos - 1].pop()  # the group itself: it ends at its ")"
            pos += 1
            return mark(group)
        return mark((text[pos - 1] == "T", 0))

    expression()
    return [ends[-1] if ends else None for ends in marks]


def _cap(k: int, limit: int) -> int:
    return max(-limit, min(limit, k))


# What a reader sees without evaluating, finest first: the first and last symbols, and the
# surplus of T over F and of | over & (capped). Shallow expressions are nearly all surface, so
# a depth uses the finest one that leaves enough expressions of both labels.
SURFACES = (
    lambda text: (text[0], text[-1], _cap(text.count("T") - text.count("F"), 3),
                  _cap(text.count("|") - text.count("&"), 3)),
    lambda text: (text[0], text[-1], _cap(text.count("T") - text.count("F"), 2),
                  _cap(text.count("|") - text.count("&"), 1)),
    lambda text: (text[0], text[-1], _cap(text.count("T") - text.count("F"), 2)),
)


class NestedLogic(Task):
    name = "logic"
    interface = "classifier"
    version = 2  # 0.4: surface-balanced labels (leak fix)
    vocab_size = len(SYMBOLS)
    num_classes = 2

    def __init__(self, train_complexities=tuple(range(1, 9)),
                 test_complexities=(2, 4, 6, 8, 10, 12, 14), max_len: int = 512,
                 train_length_mix: float = 0.0, operand_targets: bool = False,
                 extra_steps: int = 2):
        if not 0.0 <= train_length_mix <= 1.0:
            raise ValueError(f"logic: train_length_mix must lie in [0, 1] (the fraction of "
                             f"training expressions drawn longer), got {train_length_mix}")
        if extra_steps < 0:
            raise ValueError(f"logic: extra_steps must be >= 0, got {extra_steps}")
        self.extra_steps = extra_steps
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len
        self.train_length_mix = train_length_mix
        self.operand_targets = operand_targets
        self.num_position_classes = 2 if operand_targets else 0
        self._accept: dict[tuple, tuple] = {}

    def train_set(self, n: int, seed: int, complexities=None) -> list:
        """As every task's, except that a train_length_mix fraction of the expressions have
        uniform sibling weights (with no mix, the same examples as before the option)."""
        mix = self.train_length_mix

        def sample(complexity: int, rng: random.Random) -> LogicExample:
            return self.sample(complexity, rng, 1.0 if mix and rng.random() < mix else 2.0)

        return self.examples(n, complexities or self.train_complexities, seed, sample)

    def sample(self, complexity: int, rng: random.Random,
               sibling_base: float = 2.0) -> LogicExample:
        """A tree kept with probability min(P(surface, true), P(surface, false)) / P(surface,
        label): then both labels are equally likely whatever the surface. Without this,
        expressions with more T, more ORs or a T at an end are more often true, and the
        surface alone would predict the label."""
        surface, keep = self._acceptance(complexity, sibling_base)
        while True:
            tree = self._tree(complexity, rng, sibling_base)
            text, label = render(tree), evaluate(tree)
            if rng.random() < keep.get((surface(text), label), 0.0):
                return LogicExample(text, int(label), complexity)

    def _acceptance(self, depth: int, sibling_base: float) -> tuple:
        """The surface used at this depth and the acceptance by (surface, label), from 6,000
        free draws with a fixed seed: the finest surface that keeps >= 30% of the draws."""
        if (depth, sibling_base) not in self._accept:
            rng = random.Random(depth)
            drawn = [(render(tree), evaluate(tree)) for tree in
                     (self._tree(depth, rng, sibling_base) for _ in range(6000))]
            for surface in SURFACES:
                counts = Counter((surface(text), label) for text, label in drawn)
                keep = {(face, label): min(counts[face, True], counts[face, False]) / count
                        for (face, label), count in counts.items()}
                if sum(keep[key] * counts[key] for key in counts) >= 0.3 * len(drawn):
                    break
            self._accept[depth, sibling_base] = surface, keep
        return self._accept[depth, sibling_base]

    def _tree(self, depth: int, rng: random.Random, sibling_base: float):
        while True:
            tree = build(depth, rng, sibling_base)
            if len(render(tree)) + 1 <= self.max_len:
                return tree

    def thinking_steps(self, complexity: torch.Tensor) -> torch.Tensor:
        """depth + extra_steps: one step per level of nesting, and a margin."""
        return complexity + self.extra_steps

    def length(self, example: LogicExample) -> int:
        return len(example.text) + 1  # the CLS token first

    def collate(self, examples) -> dict[str, torch.Tensor]:
        batch = cls_batch([[TOKEN[c] for c in ex.text] for ex in examples], examples,
                          TOKEN["<cls>"])
        if self.operand_targets:
            batch["position_labels"] = cls_position_labels(
                batch, [operand_values(ex.text) for ex in examples])
        return batch
