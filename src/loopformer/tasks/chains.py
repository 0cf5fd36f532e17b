"""Multi-hop permutation chains (Loop-Think-Generalize): follow k relations from an entity.

A world of `num_entities` entities and `num_relations` relations, each relation a random
permutation of the entities, fixed by `world_seed`. The input is `e r_1 r_2 ... r_k` and the
answer is the entity reached by applying r_1, then r_2, ..., then r_k; k is the complexity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, answer_batch


@dataclass
class ChainExample:
    entity: int
    relations: list[int]
    answer: int
    complexity: int


class PermutationChains(Task):
    name = "chains"
    interface = "lm"

    def __init__(self, num_entities: int = 200, num_relations: int = 10, world_seed: int = 0,
                 train_complexities=tuple(range(1, 7)),
                 test_complexities=(1, 2, 4, 6, 8, 10, 12, 14, 16),
                 train_hops: int | None = None, extra_steps: int = 1):
        """train_hops: train on 1..train_hops hops (instead of train_complexities);
        extra_steps: thinking steps beyond one per hop (thinking_steps)."""
        if train_hops is not None:
            if train_hops < 1:
                raise ValueError(f"chains: train_hops must be >= 1, got {train_hops}")
            train_complexities = tuple(range(1, train_hops + 1))
        if extra_steps < 0:
            raise ValueError(f"chains: extra_steps must be >= 0, got {extra_steps}")
        self.extra_steps = extra_steps
        self.num_entities, self.num_relations = num_entities, num_relations
        world = random.Random(world_seed)
        self.permutations = [world.sample(range(num_entities), num_entities)
                             for _ in range(num_relations)]
        # Tokens: entities 0..E-1, then relations E..E+R-1.
        self.vocab_size = self.num_classes = num_entities + num_relations
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max(self.test_complexities) + 1

    def thinking_steps(self, complexity: torch.Tensor) -> torch.Tensor:
        """One step per hop (position j can hold the entity after j relations once its left
        neighbour does) and `extra_steps` more."""
        return complexity + self.extra_steps

    def follow(self, entity: int, relations: list[int]) -> int:
        for r in relations:
            entity = self.permutations[r][entity]
        return entity

    def sample(self, complexity: int, rng: random.Random) -> ChainExample:
        entity = rng.randrange(self.num_entities)
        relations = [rng.randrange(self.num_relations) for _ in range(complexity)]
        return ChainExample(entity, relations, self.follow(entity, relations), complexity)

    def collate(self, examples) -> dict[str, torch.Tensor]:
        E = self.num_entities
        return answer_batch([[ex.entity] + [E + r for r in ex.relations] for ex in examples],
                            [ex.answer for ex in examples], examples)
