"""A task of your own, as docs/tasks.md builds it: are the brackets of a string balanced?

A balanced string of n pairs (n = complexity) is a random walk that never goes below zero and
ends at zero. A negative swaps one "(" with a later ")" so that the walk dips below zero;
it keeps the number of each bracket, so counting alone does not tell the label.
"""

import random
from dataclasses import dataclass

from loopformer.tasks import Task
from loopformer.tasks.base import cls_batch

PAD, CLS, OPEN, CLOSE = 0, 1, 2, 3


@dataclass
class BracketExample:
    text: str
    label: int  # 1 = balanced
    complexity: int


def balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


class Brackets(Task):
    name = "brackets"
    interface = "classifier"  # bidirectional attention, read out from a CLS token
    vocab_size = 4
    num_classes = 2
    # The default run: these fields over the generic recipe of the interface.
    model_defaults = {"d_model": 64, "ffn_hidden": 128}
    train_defaults = {"updates": 300, "train_examples": 4000, "depth_low": 2, "depth_high": 8}

    def __init__(self, train_complexities=(2, 3, 4, 5, 6), test_complexities=(2, 4, 6, 8, 10),
                 max_len: int = 40):
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= self.max_len // 2:
            raise ValueError(f"brackets: pairs must lie in [1, {self.max_len // 2}], got "
                             f"{complexity}")

    def sample(self, complexity: int, rng: random.Random) -> BracketExample:
        text, depth, left = "", 0, complexity
        while left or depth:  # open while pairs remain, close at random or when out of pairs
            if left and (depth == 0 or rng.random() < 0.5):
                text, depth, left = text + "(", depth + 1, left - 1
            else:
                text, depth = text + ")", depth - 1
        if rng.random() < 0.5:
            return BracketExample(text, 1, complexity)
        while True:  # swap an opening bracket with a later closing one until the walk dips
            i, j = sorted(rng.sample(range(len(text)), 2))
            chars = list(text)
            chars[i], chars[j] = chars[j], chars[i]
            if not balanced("".join(chars)):
                return BracketExample("".join(chars), 0, complexity)

    def collate(self, examples):
        tokens = [[OPEN if c == "(" else CLOSE for c in ex.text] for ex in examples]
        return cls_batch(tokens, examples, CLS)
