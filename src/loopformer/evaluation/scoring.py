"""Scoring a trained task model: accuracy over (complexity, thinking steps) grids, and
adaptive depth (exit criteria, ACT) against the best fixed depth. Numbers only; figures are
in plotting.py."""

from __future__ import annotations

from typing import Collection, Hashable, Sequence

import torch

from ..model.exits import DEFAULT_EXIT_ENTROPY, ExitRule
from ..tasks.base import to_device


def _slice(batch: dict, start: int, end: int, model) -> dict:
    """Examples [start, end) of a batch, on the model's device."""
    return to_device({k: v[start:end] for k, v in batch.items()},
                     next(model.parameters()).device)


@torch.no_grad()
def accuracy_by_steps(model, batch: dict, steps: Sequence[int],
                      chunk: int = 256) -> dict[int, float]:
    """Accuracy at each step count in `steps`, from one pass of max(steps) core steps.

    The state after step t does not depend on later steps, so reading every step out of one
    unroll gives the same answers as separate runs (a fixed-depth baseline returns one answer,
    the same for every column). An ACT model's output depends on its step budget, so it is
    run once per budget.
    """
    correct = {s: 0 for s in steps}
    n = batch["label"].shape[0]
    one_pass = model.backbone.cfg.halting == "none"
    for start in range(0, n, chunk):
        part = _slice(batch, start, start + chunk, model)
        if one_pass:
            logits = model(part, max(steps), all_steps=True).logits
            by_steps = {s: logits[s - 1] if len(logits) > 1 else logits[-1] for s in steps}
        else:
            by_steps = {s: model(part, s).logits[-1] for s in steps}
        for s in steps:
            correct[s] += int(is_correct(by_steps[s], part["label"]).sum())
    return {s: correct[s] / n for s in steps}


@torch.no_grad()
def accuracy_at_task_steps(model, batch: dict, task, chunk: int = 256) -> float:
    """Accuracy when every example runs the steps its task asks for (Task.thinking_steps)."""
    correct, n = 0, batch["label"].shape[0]
    for start in range(0, n, chunk):
        part = _slice(batch, start, start + chunk, model)
        logits = model(part, task.thinking_steps(part["complexity"])).logits[-1]
        correct += int(is_correct(logits, part["label"]).sum())
    return correct / n


def is_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example: the argmax is the label and every logit is finite (argmax of a NaN row
    is arbitrary: a diverged model must not score)."""
    return (logits.argmax(-1) == labels) & torch.isfinite(logits).all(-1)


def eval_batches(task, complexities: Sequence[int], examples: int, seed: int,
                 exclude: Collection[Hashable] = frozenset()) -> dict[int | str, dict]:
    """A collated held-out set per complexity, none of whose examples has a key in `exclude`
    (the training set's), or the task's named sets (Task.eval_splits) where it has them. A
    complexity whose whole space the training set covers is left out."""
    sets = task.eval_splits(examples, seed, exclude)
    if sets is None:
        sets = {c: task.eval_set(c, examples, seed, exclude) for c in complexities}
    return {c: task.collate(found) for c, found in sets.items() if found}


def frontier_grid(task, model, complexities: Sequence[int], steps: Sequence[int | str],
                  examples: int, seed: int, exclude: Collection[Hashable] = frozenset()
                  ) -> tuple[list[int], list[list[float]], list[int]]:
    """The complexities (or named sets) that have held-out examples, accuracy[i][j] for each
    at steps[j] (an int, or "task": the steps the task asks for per example), and the number
    of examples behind each row."""
    model.eval()
    batches = eval_batches(task, complexities, examples, seed, exclude)
    fixed = [s for s in steps if s != "task"]  # "task": each example its own steps
    grid = []
    for batch in batches.values():
        by_steps = accuracy_by_steps(model, batch, fixed) if fixed else {}
        if "task" in steps:
            by_steps["task"] = accuracy_at_task_steps(model, batch, task)
        grid.append([by_steps[s] for s in steps])
    return list(batches), grid, [len(b["label"]) for b in batches.values()]


def format_grid(complexities, steps, grid, label: str = "complexity") -> str:
    header = f"{label:>10} | " + " ".join(f"{s:>5}" for s in steps)
    lines = [header, "-" * len(header)]
    for c, row in zip(complexities, grid):
        lines.append(f"{c:>10} | " + " ".join(f"{a:5.2f}" for a in row))
    return "\n".join(lines)


@torch.no_grad()
def adaptive_table(task, model, complexities: Sequence[int], criteria: dict[str, float | None],
                   max_steps: int, examples: int, seed: int, min_steps: int = 1,
                   exit_entropy: float | None = None, chunk: int = 256,
                   exclude: Collection[Hashable] = frozenset()) -> dict:
    """Per complexity: accuracy at every fixed step count 1..max_steps (and the best), and for
    each exit criterion its accuracy and mean steps used (for an ACT model: its own halting)."""
    model.eval()
    rows = []
    for c, batch in eval_batches(task, complexities, examples, seed, exclude).items():
        fixed = accuracy_by_steps(model, batch, list(range(1, max_steps + 1)), chunk)
        best_steps = max(fixed, key=lambda s: (fixed[s], -s))
        row = {"complexity": c, "fixed": fixed, "best_fixed_steps": best_steps,
               "best_fixed_accuracy": fixed[best_steps], "criteria": {}}
        act = model.backbone.cfg.halting == "act"
        for name, threshold in ({"act": None} if act else criteria).items():
            rule = None if act else ExitRule(
                name, threshold, min_steps,
                DEFAULT_EXIT_ENTROPY if exit_entropy is None else exit_entropy)
            correct, steps = 0, 0.0
            for start in range(0, batch["label"].shape[0], chunk):
                part = _slice(batch, start, start + chunk, model)
                out = model(part, max_steps, exit_rule=rule)
                correct += int(is_correct(out.logits[-1], part["label"]).sum())
                steps += float(out.steps.float().sum())
            n = batch["label"].shape[0]
            row["criteria"][name] = {"threshold": rule.threshold if rule else None,
                                     "accuracy": correct / n, "mean_steps": steps / n}
        rows.append(row)
    return {"max_steps": max_steps, "min_steps": min_steps, "rows": rows}


def format_adaptive(table: dict) -> str:
    names = list(table["rows"][0]["criteria"]) if table["rows"] else []
    head = f"{'cplx':>4} | {'best fixed':>14} | " + " | ".join(f"{n:>17}" for n in names)
    lines = [head, f"{'':>4} | {'acc @ steps':>14} | " +
             " | ".join(f"{'acc  mean steps':>17}" for _ in names), "-" * len(head)]
    for row in table["rows"]:
        cells = [f"{row['criteria'][n]['accuracy']:.3f} {row['criteria'][n]['mean_steps']:>6.2f}"
                 for n in names]
        lines.append(f"{row['complexity']:>4} | {row['best_fixed_accuracy']:>8.3f} @ "
                     f"{row['best_fixed_steps']:>3} | " + " | ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)
