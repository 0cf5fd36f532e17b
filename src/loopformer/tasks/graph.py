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
        hops = complexity
        n = rng.randint(max(self.min_nodes, hops + 3), max(self.train_max_nodes, hops + 3))
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
        from_source = distances(n, edges, source)
        to_target = distances(n, edges, target, reverse=True)
        for _ in range(rng.randint(n // 2, 2 * n)):
            u, v = rng.sample(range(n), 2)
            if (u, v) in edges:
                continue
            # The edge u -> v creates the route source ~> u -> v ~> target.
            route = from_source[u] + 1 + to_target[v]
            if positive and route < hops:
                continue
            if not positive and route < UNREACHABLE:
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
