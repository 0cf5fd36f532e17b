"""Accuracy over (complexity, thinking steps) grids, and the frontier heatmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import write_json_atomic


def _slice(batch: dict, start: int, end: int) -> dict:
    return {k: v[start:end] for k, v in batch.items()}


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
    one_pass = model.backbone.core.cfg.halting == "none"
    for start in range(0, n, chunk):
        part = _slice(batch, start, start + chunk)
        if one_pass:
            logits = model(part, max(steps), all_steps=True).logits
            by_steps = {s: logits[s - 1] if len(logits) > 1 else logits[-1] for s in steps}
        else:
            by_steps = {s: model(part, s).logits[-1] for s in steps}
        for s in steps:
            correct[s] += int((by_steps[s].argmax(-1) == part["label"]).sum())
    return {s: correct[s] / n for s in steps}


def frontier_grid(task, model, complexities: Sequence[int], steps: Sequence[int],
                  examples: int, seed: int) -> list[list[float]]:
    """accuracy[i][j] for complexities[i] at steps[j]."""
    model.eval()
    grid = []
    for c in complexities:
        batch = task.collate(task.eval_set(c, examples, seed))
        by_steps = accuracy_by_steps(model, batch, steps)
        grid.append([by_steps[s] for s in steps])
    return grid


def format_grid(complexities, steps, grid, label: str = "complexity") -> str:
    header = f"{label:>10} | " + " ".join(f"{s:>5}" for s in steps)
    lines = [header, "-" * len(header)]
    for c, row in zip(complexities, grid):
        lines.append(f"{c:>10} | " + " ".join(f"{a:5.2f}" for a in row))
    return "\n".join(lines)


def save_frontier(run_dir: Path, task_name: str, train_complexities, complexities, steps,
                  grid, title: str = "") -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    json_path, png_path = run_dir / "frontier.json", run_dir / "frontier.png"
    write_json_atomic(json_path, {"task": task_name,
                                  "train_complexities": list(train_complexities),
                                  "complexities": list(complexities), "steps": list(steps),
                                  "accuracy": grid})
    plot_frontier(png_path, complexities, steps, grid, train_complexities,
                  title or f"{task_name}: accuracy by complexity and thinking steps")
    return json_path, png_path


def plot_frontier(path: Path, complexities, steps, grid, train_complexities, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(steps), 1.0 + 0.5 * len(complexities)))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_yticks(range(len(complexities)), [str(c) for c in complexities])
    ax.set_xlabel("thinking steps")
    ax.set_ylabel("complexity")
    for i, row in enumerate(grid):
        for j, a in enumerate(row):
            ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if a > 0.6 else "white")
    trained = [i for i, c in enumerate(complexities) if c in set(train_complexities)]
    if trained:  # mark the training range with a red bracket on the left
        ax.plot([-0.5, -0.5], [min(trained) - 0.5, max(trained) + 0.5], color="red",
                linewidth=4, clip_on=False)
    ax.set_title(f"{title}\n(red bar: trained complexities)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a loopformer run?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(run_dir: Path, title: str = "") -> Path:
    """Training accuracy and held-out accuracy per complexity against updates (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    evals = [r for r in records if "eval" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["train_acc"] for r in records], lw=0.8,
            label="train (batch)")
    for c in (evals[0]["eval"] if evals else {}):
        ax.plot([r["step"] for r in evals], [r["eval"][c] for r in evals], lw=1.5,
                label=f"held out, complexity {c}")
    ax.set_xscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title or str(run_dir), fontsize=9)
    fig.tight_layout()
    path = Path(run_dir) / "curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def adaptive_table(task, model, complexities: Sequence[int], criteria: dict[str, float | None],
                   max_steps: int, examples: int, seed: int, min_steps: int = 1,
                   exit_entropy: float | None = None, chunk: int = 256) -> dict:
    """Per complexity: accuracy at every fixed step count 1..max_steps (and the best), and for
    each exit criterion its accuracy and mean steps used (for an ACT model: its own halting)."""
    from .exits import DEFAULT_EXIT_ENTROPY, ExitRule

    model.eval()
    rows = []
    for c in complexities:
        batch = task.collate(task.eval_set(c, examples, seed))
        fixed = accuracy_by_steps(model, batch, list(range(1, max_steps + 1)), chunk)
        best_steps = max(fixed, key=lambda s: (fixed[s], -s))
        row = {"complexity": c, "fixed": fixed, "best_fixed_steps": best_steps,
               "best_fixed_accuracy": fixed[best_steps], "criteria": {}}
        act = model.backbone.core.cfg.halting == "act"
        for name, threshold in ({"act": None} if act else criteria).items():
            rule = None if act else ExitRule(
                name, threshold, min_steps,
                DEFAULT_EXIT_ENTROPY if exit_entropy is None else exit_entropy)
            correct, steps = 0, 0.0
            for start in range(0, batch["label"].shape[0], chunk):
                part = _slice(batch, start, start + chunk)
                out = model(part, max_steps, exit_rule=rule)
                correct += int((out.logits[-1].argmax(-1) == part["label"]).sum())
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
