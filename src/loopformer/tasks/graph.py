"""Graph reachability (Chen 2026): is `target` reachable from `source` along directed edges?

Nodes are letters A-Z, sorted alphabetically and padded to 20 positions so that a node's
position says nothing. A positive holds a random simple path of `complexity` hops plus
U[n/2, 2n] distractor edges that never shorten the source->target distance. A negative holds
the same source path, and its target ends a decoy path (of up to the same length) among the
other nodes, with distractors that keep it unreachable; so a negative target has in-neighbours
like a positive one and local structure alone does not give the label away. Classes are 50/50.
With an attention mask that lets a node see only its in-neighbours and itself, one core step
moves information one hop.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import torch

from .base import Task

LETTERS = 26
PAD_NODE = LETTERS  # embedding row of a padding position
UNREACHABLE = 10**9


@dataclass
class GraphExample:
    letters: list[int]  # node letters, sorted
    edges: list[tuple[int, int]]  # (u, v): u -> v, node indices into `letters`
    source: int
    target: int
    label: int  # 1 = reachable
    complexity: int


def distances(n: int, edges, start: int, reverse: bool = False) -> list[int]:
    """BFS hop counts from `start` (to `start` when reverse=True)."""
    adjacency = [[] for _ in range(n)]
    for u, v in edges:
        if reverse:
            u, v = v, u
        adjacency[u].append(v)
    dist = [UNREACHABLE] * n
    dist[start] = 0
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in adjacency[u]:
            if dist[v] == UNREACHABLE:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


class GraphReachability(Task):
    name = "graph"
    interface = "graph"
    version = 2  # 0.4: pair degrees and edge count drawn before the label (leak fix)
    vocab_size = LETTERS + 1
    num_classes = 2

    def __init__(self, max_nodes: int = 20, min_nodes: int = 8, train_max_nodes: int = 16,
                 train_complexities=(1, 2, 3, 4, 5),
                 test_complexities=(1, 2, 3, 4, 6, 8, 10, 12)):
        self.max_len = max_nodes
        self.min_nodes, self.train_max_nodes = min_nodes, train_max_nodes
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity <= self.max_len - 3:
            raise ValueError(f"task 'graph': hops must lie in [1, {self.max_len - 3}] (a "
                             f"{complexity}-hop path and a decoy need {complexity + 3} of at "
                             f"most {self.max_len} nodes), got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> GraphExample:
        while True:  # rarely more than once: a draw whose degrees cannot be met is redrawn
            example = self._draw(complexity, rng)
            if example is not None:
                return example

    def _draw(self, hops: int, rng: random.Random) -> GraphExample | None:
        n = rng.randint(max(self.min_nodes, hops + 3), max(self.train_max_nodes, hops + 3))
        # Degrees of the queried pair and the edge count are drawn before the label, so that
        # neither they nor the graph's size say anything about it.
        target_in, source_out = rng.randint(1, 3), rng.randint(1, 3)
        target_out, source_in = rng.randint(0, 2), rng.randint(0, 2)
        wanted = rng.randint(n // 2, 2 * n)
        path = rng.sample(range(n), hops + 1)
        edges = set(zip(path, path[1:]))
        source = path[0]
        positive = rng.random() < 0.5
        if positive:
            target = path[-1]
        else:
            rest = [v for v in range(n) if v not in path]
            decoy = rng.sample(rest, min(hops, len(rest) - 1) + 1)
            edges |= set(zip(decoy, decoy[1:]))
            target = decoy[-1]

        def allowed(u: int, v: int) -> bool:
            """u -> v keeps the label and the path length (a route source ~> u -> v ~>
            target of at least `hops`, or none at all for a negative)."""
            if u == v or (u, v) in edges:
                return False
            route = from_source[u] + 1 + to_target[v]
            return route >= hops if positive else route >= UNREACHABLE

        from_source = distances(n, edges, source)
        to_target = distances(n, edges, target, reverse=True)
        # The queried pair's own degrees first (the path gives one edge into the target and
        # one out of the source), then distractors that leave the pair alone.
        extra = ([lambda w: (w, target)] * (target_in - 1) + [lambda w: (target, w)] * target_out
                 + [lambda w: (source, w)] * (source_out - 1) + [lambda w: (w, source)] * source_in)
        for edge in extra:
            options = [edge(w) for w in range(n) if allowed(*edge(w))]
            if not options:
                return None
            edges.add(rng.choice(options))
            from_source = distances(n, edges, source)
            to_target = distances(n, edges, target, reverse=True)
        for _ in range(8 * wanted):
            if len(edges) >= wanted:
                break
            u, v = rng.sample(range(n), 2)
            if {u, v} & {source, target} or not allowed(u, v):
                continue
            edges.add((u, v))
            from_source = distances(n, edges, source)
            to_target = distances(n, edges, target, reverse=True)
        letters = sorted(rng.sample(range(LETTERS), n))
        return GraphExample(letters, sorted(edges), source, target, int(positive), hops)

    def collate(self, examples) -> dict[str, torch.Tensor]:
        B, N = len(examples), self.max_len
        node_ids = torch.full((B, N), PAD_NODE, dtype=torch.long)
        node_mask = torch.zeros(B, N, dtype=torch.long)
        # adjacency[b, v, u] = True when v may attend to u: u -> v is an edge, or u == v.
        adjacency = torch.eye(N, dtype=torch.bool).repeat(B, 1, 1)
        for b, ex in enumerate(examples):
            n = len(ex.letters)
            node_ids[b, :n] = torch.tensor(ex.letters)
            node_mask[b, :n] = 1
            for u, v in ex.edges:
                adjacency[b, v, u] = True
        return {
            "node_ids": node_ids, "node_mask": node_mask, "adjacency": adjacency,
            "source": torch.tensor([ex.source for ex in examples]),
            "target": torch.tensor([ex.target for ex in examples]),
            "label": torch.tensor([ex.label for ex in examples]),
            "complexity": torch.tensor([ex.complexity for ex in examples]),
        }
