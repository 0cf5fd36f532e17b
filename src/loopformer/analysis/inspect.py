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
    correct = torch.zeros(steps, dtype=torch.float64)
    loss = torch.zeros(steps, dtype=torch.float64)
    entropy = torch.zeros(steps, dtype=torch.float64)
    scored = 0
    token_level = False
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
        labels = batch["label"]
        for t, logits in enumerate(out.logits):
            logits = logits.float()
            token_level = logits.dim() == 3
            keep = labels.reshape(-1) != -100  # ignored positions do not count
            flat, target = logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep]
            log_p = flat.log_softmax(-1)
            correct[t] += float((flat.argmax(-1) == target).sum())
            loss[t] += float(F.nll_loss(log_p, target, reduction="sum"))
            entropy[t] += float(-(log_p.exp() * log_p).sum(-1).nansum())
        scored += int((labels != -100).sum())
    lens = {"accuracy": (correct / scored).tolist(), "loss": (loss / scored).tolist(),
            "entropy": (entropy / scored).tolist()}
    return Inspection(torch.cat(states), where, lens, token_level)


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
