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

from ..config import ModelConfig
from .depth import Depth
from .observers import CoreOutput, StepObserver


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


class ACTObserver(StepObserver):
    """Per-token running sums of one ACT forward pass; the loop adds it when halting='act'."""

    def __init__(self, unit: HaltingUnit):
        self.unit = unit

    def start(self, state: torch.Tensor, depth: Depth) -> None:
        B, T, _ = state.shape
        self.total = depth.total
        self.cumulative = state.new_zeros(B, T, dtype=torch.float32)
        self.running = torch.ones(B, T, dtype=torch.bool, device=state.device)
        self.steps = torch.zeros(B, T, dtype=torch.long, device=state.device)
        self.remainder = state.new_zeros(B, T, dtype=torch.float32)
        self.output = torch.zeros_like(state, dtype=torch.float32)
        self.weights: list[torch.Tensor] = []
        return None

    def observe(self, step: int, state: torch.Tensor) -> torch.Tensor:
        """Fold the step's state into the output; return which tokens are still running."""
        p = self.unit(state)
        if step + 1 < self.unit.min_steps:
            p = torch.zeros_like(p)  # no weight, and no halting, before min_steps
        last = step == self.total - 1
        halts = self.running & ((self.cumulative + p > self.unit.threshold) | last)
        weight = torch.where(halts, 1.0 - self.cumulative, p) * self.running
        self.remainder = torch.where(halts, 1.0 - self.cumulative, self.remainder)
        self.cumulative = self.cumulative + weight
        self.output = self.output + weight[..., None] * state.float()
        self.steps = self.steps + self.running.long()
        self.running = self.running & ~halts
        self.weights.append(weight)
        return self.running

    def finish(self, out: CoreOutput) -> None:
        out.state = self.output.to(out.state.dtype)
        out.token_steps = self.steps
        out.ponder = self.steps.float() + self.remainder  # N + R: what the ponder cost pays
        out.step_weights = torch.stack(self.weights, dim=-1)
