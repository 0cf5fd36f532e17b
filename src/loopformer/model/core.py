"""The task-invariant recurrent core: s_0 = init(e); s_{t+1} = step(s_t, e, t) for t < T.

The core knows nothing about tokens or tasks: it takes the prelude output `e` (B, T, d) and an
`AttentionContext`. `RecurrentCore.forward` is one step (the unit that compile_regions
compiles, so a new number of steps reuses the compiled code); `unroll` loops it over a Depth,
with truncated backprop and step observers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from .block import BlockStack
from .context import AttentionContext
from .depth import Depth
from .halting import ACTObserver, HaltingUnit
from .injection import INJECTIONS, STEP_EMBEDDINGS, LTIInjection, init_state
from .lora import add_step_adapters
from .norm import RMSNorm
from .observers import CoreOutput, RowBudget, StepObserver


class RecurrentCore(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.injection = INJECTIONS[cfg.injection](cfg)
        self.step_embedding = STEP_EMBEDDINGS[cfg.step_embedding](cfg)
        self.blocks = BlockStack(cfg, cfg.n_core)
        if cfg.step_lora_rank:
            add_step_adapters(self.blocks, cfg.step_lora_rank, cfg.max_step_embeddings)
        # A pre-norm residual stream grows with every step (|s_T| ~ T under "add"); renormalising
        # the stack's output keeps the state bounded. Sandwich blocks already end in a norm, and
        # the LTI update bounds the state itself.
        renormalise = cfg.norm == "pre" and cfg.injection != "lti"
        self.out_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if renormalise else nn.Identity()
        self.halting = HaltingUnit(cfg) if cfg.halting == "act" else None

    def forward(self, s: torch.Tensor, injected: torch.Tensor, p: torch.Tensor | None,
                ctx: AttentionContext) -> torch.Tensor:
        """One step: s_{t+1} from s_t, `injected` = injection.prepare(e) and the step
        embedding p_t; `ctx` is already at this step (AttentionContext.at)."""
        return self.injection(s, injected, p, lambda x: self.out_norm(self.blocks(x, ctx)))

    def unroll(self, e: torch.Tensor, ctx: AttentionContext, depth: Depth, *,
               observers: Sequence[StepObserver] = (), initial_state: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> CoreOutput:
        """Run depth.total steps; the first depth.no_grad store no activations, so training
        memory does not grow with them (truncated backprop, Huginn). initial_state: s_0
        instead of init(e) (continuous chain-of-thought warm start)."""
        depth = Depth.of(depth)
        observers = list(observers)
        if self.halting is not None:
            observers.append(ACTObserver(self.halting))
        if depth.rows is not None:  # last: its finish caps what the others counted
            if self.halting is not None:
                raise ValueError("per-example num_steps and learned halting (halting='act') "
                                 "exclude each other: ACT decides each token's steps")
            observers.append(RowBudget(depth.rows, ctx.token_mask))
        s = initial_state if initial_state is not None else init_state(
            self.cfg.state_init, e, self.cfg.noise_std, generator)
        injected = self.injection.prepare(e)
        running = frozen = None
        if observers:
            running, frozen = _masks(observers, [obs.start(s, depth) for obs in observers])
        grad = torch.is_grad_enabled()
        steps_run = 0
        rows = step_rows(self.cfg, depth.total, e.device)
        # In inference, batch rows whose tokens have all stopped leave the loop: `live` holds
        # the rows still computed (None: all), `row_steps` the steps each row ran.
        live = row_steps = None
        for t in range(depth.total):
            step_ctx = ctx.at("core", t, len(self.blocks), rows[t])
            with torch.set_grad_enabled(grad and t >= depth.no_grad):
                if live is None:
                    s_next = self(s, injected, self.step_embedding(t, s), step_ctx)
                    if frozen is not None:  # stopped tokens keep their state
                        s_next = torch.where(frozen[..., None], s_next, s)
                else:
                    s_live = s[live]
                    s_step = self(s_live, injected[live], self.step_embedding(t, s),
                                  step_ctx.select_rows(live))
                    s_next = s.index_copy(0, live, torch.where(frozen[live][..., None],
                                                               s_step, s_live))
            s, steps_run = s_next, t + 1
            if row_steps is not None:
                row_steps[live] += 1
            if not observers:
                continue
            running, frozen = _masks(observers, [obs.observe(t, s) for obs in observers])
            if grad or running is None:
                continue
            if frozen is None:
                if not running.any():
                    break
                continue
            changing = frozen.any(-1)  # rows with a token whose state may still change
            live_rows = int(changing.sum())  # one host sync per step
            # Running tokens are never frozen, so no changing row means none runs.
            if live_rows == 0 or (running is not frozen and not running.any()):
                break
            if live_rows < len(changing):
                if row_steps is None:
                    row_steps = torch.full_like(changing, t + 1, dtype=torch.long)
                live = changing.nonzero().squeeze(1)
        if row_steps is not None and ctx.writer is not None:
            ctx.writer.row_steps = row_steps
        out = CoreOutput(state=s, steps=steps_run,
                         token_steps=torch.full_like(ctx.token_mask, steps_run, dtype=torch.long))
        for obs in observers:
            obs.finish(out)
        return out

    def spectral_radius(self) -> float | None:
        """Spectral radius of the linear state-to-state map A for injection='lti', else None."""
        if not isinstance(self.injection, LTIInjection):
            return None
        return float(self.injection.decay().detach().max())


def step_rows(cfg: ModelConfig, steps: int, device: torch.device) -> list:
    """Each step's row in the per-step tables (LoRA adapters, MoE load) as 0-d tensors, the
    last row reused past the table; None for every step when the model has no such table."""
    if not cfg.step_lora_rank and cfg.ffn != "moe":
        return [None] * steps
    return list(torch.arange(steps, device=device).clamp(max=cfg.max_step_embeddings - 1))


def _masks(observers: list[StepObserver], masks: list[torch.Tensor | None]):
    """(tokens still running, tokens whose state may change) from the observers' answers;
    None = every token."""
    running = frozen = None
    for obs, mask in zip(observers, masks):
        if mask is None:
            continue
        running = mask if running is None else running & mask
        if obs.freezes_stopped:
            frozen = mask if frozen is None else frozen & mask
    return running, frozen


class FixedDepthCore(nn.Module):
    """The no-recurrence baseline: fixed_depth untied copies of the core, each applied once.

    Built from the same injection and blocks as RecurrentCore, so a comparison isolates weight
    sharing. fixed_depth = 1 matches the looped model's parameters; fixed_depth = the mean
    training depth matches its compute. The depth asked for is validated but changes nothing.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(RecurrentCore(cfg) for _ in range(cfg.fixed_depth))

    def unroll(self, e: torch.Tensor, ctx: AttentionContext, depth: Depth, *,
               observers: Sequence[StepObserver] = (), initial_state: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> CoreOutput:
        if Depth.of(depth).rows is not None:
            raise ValueError("the fixed-depth baseline runs every example through all its "
                             "layers: per-example num_steps need the recurrent core")
        if any(obs.freezes_stopped for obs in observers) or initial_state is not None:
            raise ValueError("the fixed-depth baseline has no exits and no warm start")
        s = init_state(self.cfg.state_init, e, self.cfg.noise_std, generator)
        for obs in observers:
            obs.start(s, Depth(len(self.layers) - 1, 1))  # only the final state is a step
        rows = step_rows(self.cfg, len(self.layers), e.device)
        for t, layer in enumerate(self.layers):
            s = layer(s, layer.injection.prepare(e), layer.step_embedding(t, s),
                      ctx.at("core", t, len(layer.blocks), rows[t]))
            for obs in observers:
                obs.observe(t, s)
        out = CoreOutput(state=s, steps=len(self.layers), token_steps=torch.full_like(
            ctx.token_mask, len(self.layers), dtype=torch.long))
        for obs in observers:
            obs.finish(out)
        return out

    def spectral_radius(self) -> float | None:
        return None
