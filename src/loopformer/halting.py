"""Learned halting: Adaptive Computation Time (Graves 2016) as used by Universal Transformers.

After each step a halting unit gives p_t = sigmoid(w . s_t + b) per token. A token halts at the
first step where the running sum of p would pass `halt_threshold` (1 - eps, eps = 0.01), or at
the last step; that step gets the remainder R = 1 - (sum so far), so the step weights of every
token sum to exactly 1. The output state is the weighted sum of the step states, and the ponder
cost N + R (steps used + remainder) goes into the loss.

Three choices differ from OpenMythos's ACT, which the DESIGN notes fail: the remainder also goes
to the last step when the loop runs out (weights always sum to 1); a ponder cost exists (the
trainer adds `ponder_cost * mean(N + R)`); and b starts at -log(mean_steps - 1), so that at
initialisation p ~ 1/mean_steps and a token thinks for about mean_steps steps instead of halting
after two or three (UT's b = 1.0 gives p = 0.73 and halts after 2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


class HaltingUnit(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.d_model, 1)
        self.bias_init = -math.log(max(cfg.mean_steps - 1, 1))
        self.threshold = cfg.halt_threshold
        self.min_steps = cfg.halt_min_steps

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, self.bias_init)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(state).squeeze(-1).float())


class ACTAccumulator:
    """Per-token running sums of one ACT forward pass."""

    def __init__(self, unit: HaltingUnit, like: torch.Tensor, total_steps: int):
        B, T, _ = like.shape
        self.unit, self.total = unit, total_steps
        self.cumulative = like.new_zeros(B, T, dtype=torch.float32)
        self.running = torch.ones(B, T, dtype=torch.bool, device=like.device)
        self.steps = torch.zeros(B, T, dtype=torch.long, device=like.device)
        self.remainder = like.new_zeros(B, T, dtype=torch.float32)
        self.output = torch.zeros_like(like, dtype=torch.float32)
        self.weights: list[torch.Tensor] = []

    def add(self, t: int, state: torch.Tensor) -> torch.Tensor:
        """Fold step t's state into the output; return which tokens are still running."""
        p = self.unit(state)
        if t + 1 < self.unit.min_steps:
            p = torch.zeros_like(p)  # no weight, and no halting, before min_steps
        last = t == self.total - 1
        halts = self.running & ((self.cumulative + p > self.unit.threshold) | last)
        weight = torch.where(halts, 1.0 - self.cumulative, p) * self.running
        self.remainder = torch.where(halts, 1.0 - self.cumulative, self.remainder)
        self.cumulative = self.cumulative + weight
        self.output = self.output + weight[..., None] * state.float()
        self.steps = self.steps + self.running.long()
        self.running = self.running & ~halts
        self.weights.append(weight)
        return self.running

    def ponder(self) -> torch.Tensor:
        """N + R per token: the quantity the ponder cost penalises."""
        return self.steps.float() + self.remainder
