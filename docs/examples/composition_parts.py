"""Where a composition run's OOD two-hop queries fail: the facts, or putting them together
(docs/results.md, two-hop composition).

An OOD query (h, r1, r2) needs two OOD atomic facts, (h, r1) -> b and (b, r2) -> t, which the
model saw only as one-hop queries. For a trained run, at each step count, the script asks the
model every OOD query, and both of its facts as one-hop queries, and prints: the accuracy on
ID and OOD atomic facts, on held-out ID and OOD two-hop queries, the share of OOD queries whose
two facts the model both knows, and the two-hop accuracy among those queries and among the
others. A model that composes whatever it knows answers nearly every query of the first kind.

    python composition_parts.py runs/composition-quick --steps 2 4 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from loopformer.evaluation.scoring import is_correct
from loopformer.training.run import load_run


@torch.no_grad()
def right(task, model, examples: list, steps: int) -> torch.Tensor:
    """Per example: is the model's answer after `steps` core steps the right one."""
    batch = task.collate(examples)
    return is_correct(model(batch, steps).logits[-1], batch["label"])  # logits: per step


def parts(task, model, steps: int) -> dict[str, float]:
    mean = lambda found: float(found.float().mean()) if len(found) else float("nan")
    facts = sorted(task.facts)
    queries = task.ood_queries
    bridges = [task.facts[q.head, q.relations[0]] for q in queries]
    first = right(task, model, [task.one_hop(q.head, q.relations[0]) for q in queries], steps)
    second = right(task, model, [task.one_hop(b, q.relations[1])
                                 for q, b in zip(queries, bridges)], steps)
    two_hop = right(task, model, queries, steps)
    known = first & second
    return {
        "atomic ID": mean(right(task, model, [task.one_hop(h, r) for h, r in facts
                                              if (h, r) not in task.ood_facts], steps)),
        "atomic OOD": mean(right(task, model, [task.one_hop(h, r) for h, r in facts
                                               if (h, r) in task.ood_facts], steps)),
        "two-hop ID": mean(right(task, model, task.held_out_queries, steps)),
        "two-hop OOD": mean(two_hop),
        "both facts known": mean(known),
        "OOD | both known": mean(two_hop[known]),
        "OOD | not both": mean(two_hop[~known]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a composition run directory")
    parser.add_argument("--steps", type=int, nargs="+", default=[4])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task, model, _, _ = load_run(args.run)
    if task.name != "composition":
        raise SystemExit(f"{args.run} is a {task.name!r} run; this script reads composition runs")
    model.eval()
    for steps in args.steps:
        found = parts(task, model, steps)
        print(f"steps {steps}: " + ", ".join(f"{k} {v:.3f}" for k, v in found.items()))


if __name__ == "__main__":
    main()
