"""Figures from scores and metrics: the frontier heatmap and the training curves.

Drawn with matplotlib's object API (no pyplot), so the caller's backend is left alone.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def plot_frontier(path: Path, complexities, steps, grid, train_complexities, title: str):
    fig = Figure(figsize=(1.0 + 0.7 * len(steps), 1.0 + 0.5 * len(complexities)))
    ax = fig.subplots()
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


def plot_curves(records: list[dict], path: Path, title: str = "") -> Path:
    """Training accuracy and held-out accuracy per complexity against updates (log x), from
    a run's metrics records."""
    evals = [r for r in records if "eval" in r]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot([r["update"] for r in records], [r["train_acc"] for r in records], lw=0.8,
            label="train (batch)")
    for c in (evals[0]["eval"] if evals else {}):
        ax.plot([r["update"] for r in evals], [r["eval"][c] for r in evals], lw=1.5,
                label=eval_label(c))
    ax.set_xscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def eval_label(key: str) -> str:
    """An evaluation record's key: a held-out complexity ("3") or a named set ("ood")."""
    return f"held out, complexity {key}" if key.isdigit() else f"eval set {key!r}"


def plot_perplexity(path: Path, steps, perplexity, title: str) -> None:
    """Validation perplexity against thinking steps (log-scaled steps)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot(steps, perplexity, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("thinking steps")
    ax.set_ylabel("validation perplexity")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
