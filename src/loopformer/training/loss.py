"""The training loss of a task model: the answer's cross-entropy (final step, or blended
with every step), per-position targets, a fixed-point penalty, ACT's ponder cost and MoE
balancing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.depth import Depth
from ..model.observers import StepChange
from ..tasks.interfaces import TaskModel


def loss_and_accuracy(model: TaskModel, batch: dict, depth: Depth | int, alpha: float,
                      ponder_cost: float = 0.0, fixed_point_weight: float = 0.0):
    # "position_due": when each position's answer arrives, a change the penalty spares
    step_change = [StepChange(batch.get("position_due"))] if fixed_point_weight > 0 else []
    out = model(batch, depth, all_steps=alpha > 0, observers=step_change)
    # One label per example (tasks) or per position (text): both flatten to (N, classes).
    logits = [l.flatten(0, -2).float() for l in out.logits]
    labels = batch["label"].flatten()
    final = F.cross_entropy(logits[-1], labels)
    loss = final
    if alpha > 0:
        per_step = torch.stack([F.cross_entropy(l, labels) for l in logits]).mean()
        loss = (1 - alpha) * final + alpha * per_step
    if out.position_logits is not None:  # per-position targets: each example's mean
        loss = loss + position_loss(out.position_logits, batch["position_labels"])
    if step_change:  # states that settle instead of drifting (docs/training.md)
        loss = loss + fixed_point_weight * step_change[0].value
    if out.ponder is not None:  # ACT: pay for every step taken (Graves 2016)
        loss = loss + ponder_cost * out.ponder.mean()
    if out.aux_loss is not None:  # MoE load balancing (already weighted by moe_aux_weight)
        loss = loss + out.aux_loss
    accuracy = (logits[-1].argmax(-1) == labels).float().mean()
    return loss, accuracy


def fixed_point_weight_at(weight: float, warmup: int, update: int) -> float:
    """The fixed-point penalty's weight at 0-based `update`: rising linearly to `weight` over
    `warmup` updates (TrainConfig.fixed_point_warmup)."""
    return weight * min(1.0, (update + 1) / max(warmup, 1))


def position_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the positions with a target (labels != -100), averaged within each
    example first, so that micro-batches and processes weigh every example alike."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
    targets = (labels != -100).sum(1).clamp_min(1)
    return (ce.sum(1) / targets).mean()
