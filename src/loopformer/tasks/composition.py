"""Two-hop composition (Wang et al. 2024, "Grokked transformers are implicit reasoners";
Loop-Think-Generalize's systematicity test), scaled down for a CPU.

A world of `num_entities` entities and `num_relations` relations, fixed by `world_seed`: every
entity heads `facts_per_entity` atomic facts (h, r) -> t with distinct relations and random
tails. A share `ood_fraction` of the atomic facts is out-of-distribution (OOD), the rest in-
distribution (ID). Training holds every atomic fact (input `h r`) and a subset of the two-hop
queries (h, r1, r2) -> r2(r1(h)) whose two atomic facts are both ID, `inferred_ratio` times as
many as the atomic facts (Wang et al.'s phi). Evaluation asks three sets: trained two-hop
queries ("train"), held-out ID two-hop queries ("id"), and OOD two-hop queries, both of whose
atomic facts are OOD, so neither ever appeared in a trained composition ("ood"); and, as a
probe, the OOD atomic facts themselves ("ood_atomic").
Complexity = hops (1 atomic, 2 two-hop).

`entity_targets` labels every position before the answer with the entity it stands for (batch
key "position_labels"): the head itself, and after a relation the entity reached so far (the
bridge, itself an atomic fact's answer), so that an input entity and a computed one are read
out alike. An experiment: it did not bring OOD composition closer (docs/results.md).

`atomic_repeat` puts every atomic fact that many times into the training set, so that a batch
holds that many times more of them beside the same two-hop queries: the OOD facts are supported
by their atomic examples alone (the ID facts by their compositions too), and under weight decay
the model forgets a share of them (docs/results.md).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from .base import Task, answer_batch


@dataclass
class CompositionExample:
    head: int
    relations: tuple[int, ...]
    answer: int
    complexity: int


class Composition(Task):
    name = "composition"
    interface = "lm"

    def __init__(self, num_entities: int = 200, num_relations: int = 20,
                 facts_per_entity: int = 10, ood_fraction: float = 0.1,
                 inferred_ratio: float = 3.6, world_seed: int = 0,
                 entity_targets: bool = False, atomic_repeat: int = 1):
        if not 1 <= facts_per_entity <= num_relations:
            raise ValueError(f"facts_per_entity must lie in [1, num_relations = "
                             f"{num_relations}], got {facts_per_entity}")
        if atomic_repeat < 1:
            raise ValueError(f"atomic_repeat must be >= 1, got {atomic_repeat}")
        if not 0 < ood_fraction < 1 or inferred_ratio <= 0:
            raise ValueError(f"ood_fraction must lie in (0, 1) and inferred_ratio be > 0, got "
                             f"{ood_fraction} and {inferred_ratio}")
        E, R = num_entities, num_relations
        self.num_entities, self.entity_targets = E, entity_targets
        self.atomic_repeat = atomic_repeat
        self.vocab_size = self.num_classes = E + R  # entities, then relations
        self.max_len = 3
        self.train_complexities, self.test_complexities = (1, 2), (2,)
        world = random.Random(world_seed)
        self.facts = {(h, r): world.randrange(E) for h in range(E)
                      for r in sorted(world.sample(range(R), facts_per_entity))}
        atomic = sorted(self.facts)
        world.shuffle(atomic)
        self.ood_facts = set(atomic[:round(ood_fraction * len(atomic))])
        outgoing = defaultdict(list)
        for (h, r), t in self.facts.items():
            outgoing[h].append(r)
        id_queries, self.ood_queries = [], []
        for (h, r1), bridge in sorted(self.facts.items()):
            for r2 in outgoing[bridge]:
                ood = ((h, r1) in self.ood_facts, (bridge, r2) in self.ood_facts)
                if ood == (False, False):
                    id_queries.append(self.two_hop(h, r1, r2))
                elif ood == (True, True):
                    self.ood_queries.append(self.two_hop(h, r1, r2))
        world.shuffle(id_queries)
        # At least a tenth of the ID queries stays held out, whatever phi asks for.
        trained = min(round(inferred_ratio * len(self.facts)), len(id_queries) * 9 // 10)
        self.trained_queries, self.held_out_queries = id_queries[:trained], id_queries[trained:]

    def one_hop(self, h: int, r: int) -> CompositionExample:
        return CompositionExample(h, (r,), self.facts[h, r], 1)

    def two_hop(self, h: int, r1: int, r2: int) -> CompositionExample:
        return CompositionExample(h, (r1, r2), self.facts[self.facts[h, r1], r2], 2)

    def check_complexity(self, complexity: int) -> None:
        if complexity not in (1, 2):
            raise ValueError(f"task 'composition': hops must be 1 or 2, got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> CompositionExample:
        """An atomic fact, or a held-out in-distribution two-hop query."""
        self.check_complexity(complexity)
        if complexity == 1:
            return self.one_hop(*rng.choice(sorted(self.facts)))
        return rng.choice(self.held_out_queries)

    def train_set(self, n: int, seed: int, complexities=None) -> list:
        """Every atomic fact (atomic_repeat times) and the trained two-hop queries (n is
        ignored: the world decides)."""
        atomic = [self.one_hop(h, r) for h, r in sorted(self.facts)]
        return atomic * self.atomic_repeat + list(self.trained_queries)

    def eval_splits(self, n: int, seed: int, exclude=frozenset()) -> dict[str, list]:
        """Up to n queries from each of: trained two-hop, held-out ID two-hop, OOD two-hop,
        and the OOD atomic facts as one-hop queries ("ood_atomic", trained: whether the model
        still knows the facts the OOD queries are made of)."""
        rng = random.Random(seed)
        pick = lambda pool: rng.sample(pool, min(n, len(pool)))
        ood_atomic = [self.one_hop(h, r) for h, r in sorted(self.ood_facts)]
        return {"train": pick(self.trained_queries), "id": pick(self.held_out_queries),
                "ood": pick(self.ood_queries), "ood_atomic": pick(ood_atomic)}

    def collate(self, examples) -> dict[str, torch.Tensor]:
        E = self.num_entities
        batch = answer_batch([[ex.head] + [E + r for r in ex.relations] for ex in examples],
                             [ex.answer for ex in examples], examples)
        if self.entity_targets:  # left-padded like the inputs; the answer's own position: none
            labels = torch.full_like(batch["input_ids"], -100)
            for row, ex in enumerate(examples):
                reached = [ex.head]
                for r in ex.relations[:-1]:
                    reached.append(self.facts[reached[-1], r])
                labels[row, -1 - len(reached):-1] = torch.tensor(reached)
            batch["position_labels"] = labels
        return batch
