"""`analyze`: inspect a model on some batches and write analysis.json, trajectories.png and
lens.png into a directory."""

from __future__ import annotations

from pathlib import Path

from ..files import write_json_atomic
from .figures import plot_lens, plot_trajectories
from .inspect import classify_tokens, convergence, inspect


def analyze(model, batches: list[dict], steps: int, out: Path, title: str = "",
            **tolerances) -> dict:
    """Per-step states of every real token over `steps` core steps, each token's trajectory
    class, the logit lens and the convergence of the state; returns what analysis.json holds."""
    found = inspect(model, batches, steps)
    tokens, counts = classify_tokens(found, **tolerances)
    metric = "loss" if found.token_level else "accuracy"
    summary = {"steps": steps, "tokens": len(tokens), "counts": counts,
               "lens": found.lens, "lens_metric": metric,
               "convergence": convergence(found.states), "per_token": tokens}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "analysis.json", summary)
    plot_trajectories(out / "trajectories.png", found.states,
                      [t["label"] for t in tokens], title)
    plot_lens(out / "lens.png", found.lens, summary["convergence"], metric, title)
    return summary
