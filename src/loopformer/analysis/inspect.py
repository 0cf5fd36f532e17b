"""Per-step states and the logit lens of a trained model, from one pass per batch.

The states come from a StateCollector observer (the loop's one window on each step) and the
readout of every step from the model's own `all_steps` path, so nothing here re-implements
the forward pass. Works for every TaskModel: task models (graph, classifier, answer-token
LMs: accuracy by step) and text models (TextLM: next-token loss by step).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.observers import StateCollector
from ..tasks.base import to_device
from .trajectory import CLASSES, describe_trajectory


@dataclass
class Inspection:
    states: torch.Tensor  # (tokens, steps, d): every real token's state after each step
    where: list[dict]  # per token: batch, example, position, complexity
    lens: dict[str, list[float]]  # per step: accuracy, loss, entropy of the readout
    token_level: bool  # the readout predicts every token (text), not one answer per example


@torch.no_grad()
def inspect(model, batches: list[dict], steps: int) -> Inspection:
    """Run each batch for `steps` core steps, keeping every real token's per-step state and
    scoring the readout after every step against batch["label"]."""
    model.eval()
    device = next(model.parameters()).device
    states, where = [], []
    sums = torch.zeros(steps, 3, dtype=torch.float64)  # correct, loss, entropy by step
    scored, token_level = 0, False
    for b, batch in enumerate(batches):
        batch = to_device(batch, device)
        collector = StateCollector()
        out = model(batch, steps, all_steps=True, observers=[collector])
        if len(collector.states) != steps:
            raise ValueError(f"the model ran {len(collector.states)} of {steps} steps: "
                             "trajectories need the recurrent core (not the fixed-depth "
                             "baseline or learned halting)")
        _, ctx = model.embed_inputs(batch)
        real = ctx.token_mask.bool()
        stacked = torch.stack(collector.states, dim=2)  # (B, T, steps, d)
        states.append(stacked[real].float().cpu())
        complexity = batch.get("complexity")
        for example, position in real.nonzero().tolist():
            where.append({"batch": b, "example": example, "position": position,
                          "complexity": None if complexity is None
                          else int(complexity[example])})
        for t, logits in enumerate(out.logits):
            sums[t] += _lens_sums(logits, batch["label"])
        scored += int((batch["label"] != -100).sum())
        token_level = out.logits[-1].dim() == 3
    lens = dict(zip(("accuracy", "loss", "entropy"), (sums / scored).T.tolist()))
    return Inspection(torch.cat(states), where, lens, token_level)


def _lens_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One step's readout over the scored labels (-100: ignored): the number correct, the
    summed next-token / answer loss and the summed entropy."""
    keep = labels.reshape(-1) != -100
    flat = logits.float().reshape(-1, logits.shape[-1])[keep]
    target = labels.reshape(-1)[keep]
    log_p = flat.log_softmax(-1)
    return torch.tensor([float((flat.argmax(-1) == target).sum()),
                         float(F.nll_loss(log_p, target, reduction="sum")),
                         float(-(log_p.exp() * log_p).sum(-1).nansum())], dtype=torch.float64)


def convergence(states: torch.Tensor) -> dict[str, list[float]]:
    """|s_t - s_{t-1}| / |s_t| for t = 2..steps: median and quartiles over tokens."""
    moves = (states[:, 1:] - states[:, :-1]).norm(dim=-1)
    relative = (moves / states[:, 1:].norm(dim=-1).clamp_min(1e-30)).double()
    q = torch.quantile(relative, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
    return {"step": list(range(2, states.shape[1] + 1)), "q25": q[0].tolist(),
            "median": q[1].tolist(), "q75": q[2].tolist()}


def classify_tokens(found: Inspection, **tolerances) -> tuple[list[dict], dict[str, int]]:
    """Each token's trajectory class and numbers (with where it sits), and counts per class."""
    tokens = []
    for states, place in zip(found.states, found.where):
        tokens.append({**place, **describe_trajectory(states, **tolerances).to_dict()})
    counts = Counter(t["label"] for t in tokens)
    return tokens, {c: counts.get(c, 0) for c in CLASSES}
