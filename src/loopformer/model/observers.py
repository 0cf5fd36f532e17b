"""Step observers: the one way to see each core step from outside the loop.

Exits, learned halting (ACT) and state collection are observers; the loop
(`RecurrentCore.unroll`) calls `start` once, `observe` after every step and `finish` at the
end. An observer may stop tokens: `observe` returns which tokens still run. The loop ends
early once no token runs, but only without autograd: a data-dependent number of steps in
training would desynchronise data-parallel ranks. An observer with `freezes_stopped` also
keeps each stopped token's state as it was (exits); otherwise stopped tokens keep computing
and the observer decides what they contribute (ACT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .depth import Depth


@dataclass
class CoreOutput:
    state: torch.Tensor  # (B, T, d): the final state (ACT: the halting-weighted state)
    steps: int  # core steps run
    token_steps: torch.Tensor  # (B, T) steps each token used (exits / ACT: its own)
    ponder: torch.Tensor | None = None  # (B, T) ACT's N + R
    step_weights: torch.Tensor | None = None  # (B, T, steps) ACT's weight of each step
    aux_loss: torch.Tensor | None = None  # MoE balancing loss (moe_balance="aux-loss")


class StepObserver:
    freezes_stopped = False

    def start(self, state: torch.Tensor, depth: Depth) -> torch.Tensor | None:
        """Called with s_0; returns the tokens that run from the start, or None (all)."""
        return None

    def observe(self, step: int, state: torch.Tensor) -> torch.Tensor | None:
        """Called with the state after core step `step` (0-based); returns the (B, T) bool
        mask of tokens still running, or None when the observer stops nothing."""
        return None

    def finish(self, out: CoreOutput) -> None:
        """Called once after the loop, to add what the observer measured to the output."""


class StateCollector(StepObserver):
    """Keeps the state after every gradient step (per-step supervision, evaluating many
    depths in one pass, trajectory analysis)."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []
        self.first = 0

    def start(self, state, depth):
        self.states, self.first = [], depth.no_grad
        return None

    def observe(self, step, state):
        if step >= self.first:
            self.states.append(state)
        return None


class StepChange(StepObserver):
    """The mean relative state change ||s_t - s_(t-1)|| / ||s_t|| over tokens and gradient
    steps: the penalty of a fixed-point objective (TrainConfig.fixed_point_weight). Its norm,
    not its square, so that a few large changes cost less than a steady drift.

    `due` (B, T), the step at which each position's answer is due (batch key
    "position_due", 0: none): a position's change is free in the first `settle` steps and in
    the two steps up to its due step, where its answer arrives; every other change counts (the
    mean stays over all tokens)."""

    settle = 2

    def __init__(self, due: torch.Tensor | None = None):
        self.due = due

    def start(self, state, depth):
        self.previous, self.first, self.terms = state, depth.no_grad, []
        return None

    def observe(self, step, state):
        if step >= self.first:
            change = (state - self.previous).pow(2).sum(-1).add(1e-12).sqrt()
            # A detached norm: the model cannot shrink the ratio by inflating its states.
            change = change / state.detach().norm(dim=-1).clamp_min(1e-6)
            if self.due is not None:
                arriving = (self.due > 0) & (self.due - 1 <= step + 1) & (step + 1 <= self.due)
                change = change * ~(arriving | (step + 1 <= self.settle))
            self.terms.append(change.mean())
        self.previous = state
        return None

    @property
    def value(self) -> torch.Tensor:
        return torch.stack(self.terms).mean()


class RowBudget(StepObserver):
    """Per-row step counts in one batch (Depth.rows): row b stops after rows[b] steps and
    keeps its state, as an exited token does."""

    freezes_stopped = True

    def __init__(self, rows: torch.Tensor, token_mask: torch.Tensor):
        if rows.shape[0] != token_mask.shape[0]:
            raise ValueError(f"num_steps has {rows.shape[0]} rows but the batch has "
                             f"{token_mask.shape[0]}: give one step count per example")
        self.rows = rows.to(token_mask.device)[:, None]
        self.shape = token_mask.shape

    def start(self, state, depth):
        return (self.rows > 0).expand(self.shape)

    def observe(self, step, state):
        return (self.rows > step + 1).expand(self.shape)

    def finish(self, out: CoreOutput) -> None:
        out.token_steps = torch.minimum(out.token_steps, self.rows)
