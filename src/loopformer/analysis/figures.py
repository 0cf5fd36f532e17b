"""The analysis figures: trajectories in their leading principal components, and the logit
lens with the convergence of the state. matplotlib's object API (no pyplot)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from .trajectory import CLASSES


def principal_components(states: torch.Tensor, q: int = 3) -> torch.Tensor:
    """(tokens, steps, d) -> (tokens, steps, q): the states projected on the q leading
    principal components of all of them together (torch.pca_lowrank, centred)."""
    flat = states.reshape(-1, states.shape[-1]).double()
    q = min(q, *flat.shape)
    _, _, v = torch.pca_lowrank(flat, q=q, center=True)
    projected = (flat - flat.mean(0)) @ v[:, :q]
    if q < 3:  # too few states or dimensions: pad so that every panel is 3-D
        projected = torch.cat([projected, projected.new_zeros(len(flat), 3 - q)], dim=1)
    return projected.reshape(*states.shape[:2], 3)


def plot_trajectories(path: Path, states: torch.Tensor, labels: list[str], title: str,
                      per_class: int = 6) -> None:
    """One 3-D panel per class: up to `per_class` of its tokens, each a line from its first
    step (circle) to its last (cross), in the PCA of that panel's states."""
    fig = Figure(figsize=(4 * len(CLASSES), 4.2))
    for i, name in enumerate(CLASSES):
        ax = fig.add_subplot(1, len(CLASSES), i + 1, projection="3d")
        chosen = [k for k, label in enumerate(labels) if label == name][:per_class]
        count = sum(label == name for label in labels)
        ax.set_title(f"{name}: {count} tokens", fontsize=9)
        if not chosen:
            continue
        for path3 in principal_components(states[chosen]):
            x, y, z = path3.T.tolist()
            line = ax.plot(x, y, z, lw=1.0, marker=".", markersize=2)[0]
            ax.scatter(x[0], y[0], z[0], color=line.get_color(), marker="o", s=16)
            ax.scatter(x[-1], y[-1], z[-1], color=line.get_color(), marker="x", s=24)
        ax.set_xlabel("PC1", fontsize=7)
        ax.set_ylabel("PC2", fontsize=7)
        ax.set_zlabel("PC3", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_lens(path: Path, lens: dict, convergence: dict, metric: str, title: str) -> None:
    """Readout quality and entropy after every step, and the relative state change."""
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    steps = list(range(1, len(lens[metric]) + 1))
    axes[0].plot(steps, lens[metric], marker=".")
    axes[0].set_ylabel("accuracy" if metric == "accuracy" else "loss (nats)")
    axes[1].plot(steps, lens["entropy"], marker=".", color="tab:orange")
    axes[1].set_ylabel("readout entropy (nats)")
    axes[2].plot(convergence["step"], convergence["median"], color="tab:green", label="median")
    axes[2].fill_between(convergence["step"], convergence["q25"], convergence["q75"],
                         color="tab:green", alpha=0.25, label="quartiles")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("|s_t - s_(t-1)| / |s_t|")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("thinking step")
    fig.suptitle(f"{title}: logit lens and convergence", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
