"""What every task provides: seeded examples with a complexity knob, and a collate function."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Collection, Hashable, Sequence

import torch


class Task(ABC):
    """A reasoning task. Subclasses define `sample` and `collate` and the class attributes.

    `interface` names the model wrapper the task needs (see `loopformer.tasks.interfaces`):
    "graph" (node embeddings, adjacency mask, pair readout), "classifier" (bidirectional, CLS
    readout) or "lm" (a token sequence whose last position predicts the answer token).
    """

    name: ClassVar[str]
    interface: ClassVar[str]
    version: ClassVar[int] = 1  # raised when the generator's examples change (recorded by runs)
    # The default run of a task without a named recipe (a user's own): ModelConfig and
    # TrainConfig fields over the generic recipe of its interface (training/recipes.py).
    model_defaults: ClassVar[dict] = {}
    train_defaults: ClassVar[dict] = {}
    vocab_size: int
    max_len: int
    num_classes: int  # output width of the readout (the vocabulary for "lm" tasks)
    # width of a classifier's per-position readout, for tasks whose batches hold
    # "position_labels" (0: none; "lm" tasks read positions with the LM head)
    num_position_classes: int = 0
    train_complexities: tuple[int, ...]
    test_complexities: tuple[int, ...]

    @abstractmethod
    def sample(self, complexity: int, rng: random.Random) -> Any:
        """One example of the given complexity, drawn with `rng` only."""

    @abstractmethod
    def collate(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Examples -> a batch of tensors with at least "label" (B,) and "complexity" (B,)."""

    def recipe(self, preset: str) -> dict:
        """{"model": {...}, "train": {...}}: this task's fields over the generic recipe of its
        interface, for `preset` ("quick" or "paper"). Override to tell the presets apart."""
        return {"model": dict(self.model_defaults), "train": dict(self.train_defaults)}

    def thinking_steps(self, complexity: torch.Tensor) -> torch.Tensor:
        """(B,) thinking steps the examples of these complexities need: what TrainConfig.depth
        = "task" trains and evaluates with. A task whose steps follow its input overrides it."""
        raise ValueError(f"task {self.name!r} does not say how many thinking steps its "
                         "examples need: choose another --train.depth (uniform, fixed, ...)")

    def check_complexity(self, complexity: int) -> None:
        if complexity < 1:
            raise ValueError(f"task {self.name!r}: complexity must be >= 1, got {complexity}")

    def train_set(self, n: int, seed: int, complexities: Sequence[int] | None = None) -> list:
        """n examples spread evenly over the training complexities."""
        return self.examples(n, complexities or self.train_complexities, seed)

    def length(self, example) -> int:
        """How long the example is once collated (what padding follows): by default the widest
        per-position tensor of the example collated alone. Override with something cheaper."""
        batch = self.collate([example])
        return max((t.shape[1] for t in batch.values() if t.dim() >= 2), default=1)

    def key(self, example) -> Hashable:
        """What makes two examples the same question (the eval sets leave out training keys)."""
        return repr(example)

    def eval_set(self, complexity: int, n: int, seed: int,
                 exclude: Collection[Hashable] = frozenset()) -> list:
        """Up to n held-out examples of one complexity, seeded apart from the training set: no
        two alike and none whose key is in `exclude` (the training set's keys). Fewer, possibly
        none, where the training set covers nearly the whole space of that complexity."""
        self.check_complexity(complexity)
        rng = random.Random(seed + 1_000_003 * (complexity + 1))
        chosen, seen = [], set(exclude)
        for _ in range(20 * n + 1000):  # the space of one complexity can be small
            if len(chosen) == n:
                break
            example = self.sample(complexity, rng)
            key = self.key(example)
            if key not in seen:
                seen.add(key)
                chosen.append(example)
        return chosen

    def eval_splits(self, n: int, seed: int, exclude: Collection[Hashable] = frozenset()
                    ) -> dict[str, list] | None:
        """Named held-out sets evaluated instead of one per complexity (e.g. "train", "id",
        "ood" for composition), or None: one eval_set per complexity."""
        return None

    def examples(self, n: int, complexities: Sequence[int], seed: int,
                 sample: Callable[[int, random.Random], Any] | None = None) -> list:
        """n examples cycling through `complexities`, drawn by `sample` (default
        self.sample) from one generator seeded with `seed`."""
        for c in complexities:
            self.check_complexity(c)
        rng, sample = random.Random(seed), sample or self.sample
        return [sample(complexities[i % len(complexities)], rng) for i in range(n)]


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on `device`; host-to-device copies do not block the host."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def left_pad(sequences: Sequence[Sequence[int]], pad: int = 0):
    """Left-pad token lists so that every sequence ends at the last position."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq):] = 1
    return ids, mask


def right_pad(sequences: Sequence[Sequence[int]], pad: int = 0):
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
    return ids, mask


def cls_batch(token_lists: Sequence[Sequence[int]], examples, cls_id: int) -> dict:
    """A classification batch: a CLS token first, right padding, labels and complexities."""
    ids, mask = right_pad([[cls_id, *tokens] for tokens in token_lists])
    return {"input_ids": ids, "attention_mask": mask,
            "label": torch.tensor([ex.label for ex in examples]),
            "complexity": torch.tensor([ex.complexity for ex in examples])}


def cls_position_labels(batch: dict, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-position targets for a cls_batch: each example's list from the position after the
    CLS token, -100 (none) elsewhere, padding included."""
    labels = torch.full_like(batch["input_ids"], -100)
    for row, row_targets in enumerate(targets):
        labels[row, 1:1 + len(row_targets)] = torch.tensor(row_targets, dtype=labels.dtype)
    return labels


def answer_batch(token_lists: Sequence[Sequence[int]], answers: Sequence[int], examples) -> dict:
    """An answer-token batch ("lm" interface): left padding, so that the last position reads
    the answer, with the answers as labels and the examples' complexities."""
    ids, mask = left_pad(token_lists)
    return {"input_ids": ids, "attention_mask": mask, "label": torch.tensor(list(answers)),
            "complexity": torch.tensor([ex.complexity for ex in examples])}
