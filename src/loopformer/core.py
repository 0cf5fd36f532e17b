"""The task-invariant recurrent core: s_0 = init(e); s_{t+1} = step(s_t, e, t) for t < T.

The core knows nothing about tokens or tasks. It takes the prelude output `e` (B, T, d) and an
`AttentionContext`, and returns the final state. Each variant (injection, state init, step
embedding) is a small module or function chosen by a config value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import ModelConfig
from .exits import ExitRule, ExitTracker
from .halting import ACTAccumulator, HaltingUnit
from .layers import AttentionContext, RMSNorm, make_block

Blocks = Callable[[torch.Tensor], torch.Tensor]

# Largest per-channel decay of the LTI injection. 1 - 1/128 stays below 1 in fp32 and keeps the
# decay visible after bf16 rounding of the state (bf16 spacing just below 1 is 2**-8).
LTI_MAX_DECAY = 1.0 - 1.0 / 128


def _plus(x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    return x if p is None else x + p


class Injection(nn.Module):
    """How the state and the input e enter the shared stack. `prepare(e)` is called once per
    forward pass (e does not change across steps); `forward` once per step."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def prepare(self, e: torch.Tensor) -> torch.Tensor:
        return e


class AddInjection(Injection):
    """s_{t+1} = B(s_t + e)  (looped transformers, Fan et al. 2024)."""

    def forward(self, s, e, p, blocks: Blocks):
        return blocks(_plus(s + e, p))


class ConcatInjection(Injection):
    """s_{t+1} = B(W [s_t ; e]), W: 2d -> d without bias  (Huginn, Geiping et al. 2025).

    Stored as W = [W_s | W_e]: W [s ; e] = W_s s + W_e e, and W_e e is computed once per call
    rather than once per step (no concatenation, half the adapter FLOPs in the loop).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.state_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.input_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def prepare(self, e: torch.Tensor) -> torch.Tensor:
        return self.input_proj(e)

    def forward(self, s, e_projected, p, blocks: Blocks):
        return blocks(_plus(self.state_proj(s) + e_projected, p))


class LTIInjection(Injection):
    """s_{t+1} = A*s_t + B*e + R(s_t, e), A diagonal in (0, LTI_MAX_DECAY]  (Parcae 2026).

    A = LTI_MAX_DECAY * sigmoid(theta) is computed in fp32, so no parameter value and no model
    dtype can reach 1 (OpenMythos's exp(-exp(x)) with a clamp reaches exactly 1.0). R is the
    shared stack's residual update B(x) - x: bounded for pre-norm blocks (each branch sees a
    normalised input), and for sandwich blocks it turns the state coefficient into A - 1, whose
    magnitude is also < 1. Either way the state stays bounded for any number of steps.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        # Spread the initial decays over [0.5, 0.95] so channels hold memory for 1-20 steps.
        target = torch.linspace(0.5, 0.95, cfg.d_model) / LTI_MAX_DECAY
        self.decay_logit = nn.Parameter(torch.logit(target))
        self.input_gain = nn.Parameter(torch.ones(cfg.d_model))

    def decay(self) -> torch.Tensor:
        return LTI_MAX_DECAY * torch.sigmoid(self.decay_logit.float())

    def forward(self, s, e, p, blocks: Blocks):
        x = _plus(s + e, p)
        residual = blocks(x).float() - x.float()
        s_next = self.decay() * s.float() + self.input_gain.float() * e.float() + residual
        return s_next.to(s.dtype)


class GatedInjection(Injection):
    """h = B(s_t + p_t); z = sigmoid(W_z [h ; s_t] + b_z); s_{t+1} = z*h + (1-z)*s_t  (Chen 2026).

    b_z starts at gate_bias_init (-2: each step keeps ~88% of the state), an identity bias.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.gate = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=True)
        self.gate_bias_init = cfg.gate_bias_init

    def reset_gate(self) -> None:
        nn.init.constant_(self.gate.bias, self.gate_bias_init)

    def forward(self, s, e, p, blocks: Blocks):
        h = blocks(_plus(s, p))
        z = torch.sigmoid(self.gate(torch.cat((h, s), dim=-1)))
        return s + z * (h - s)


INJECTIONS = {"add": AddInjection, "concat": ConcatInjection, "lti": LTIInjection,
              "gated": GatedInjection}


class NoStepEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, step: int, like: torch.Tensor) -> None:
        return None


class LearnedStepEmbedding(nn.Module):
    """A table of max_step_embeddings rows; a step beyond the table reuses the last row."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.table = nn.Embedding(cfg.max_step_embeddings, cfg.d_model)

    def forward(self, step: int, like: torch.Tensor) -> torch.Tensor:
        return self.table.weight[min(step, self.table.num_embeddings - 1)].to(like.dtype)


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sin/cos code of the step index; defined for any step."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        half = cfg.d_model // 2
        inv_freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, step: int, like: torch.Tensor) -> torch.Tensor:
        angles = step * self.inv_freq.float()
        code = torch.cat((angles.sin(), angles.cos()))
        if code.shape[0] < like.shape[-1]:  # odd d_model
            code = torch.cat((code, code.new_zeros(1)))
        return code.to(like.dtype)


STEP_EMBEDDINGS = {"none": NoStepEmbedding, "learned": LearnedStepEmbedding,
                   "sinusoidal": SinusoidalStepEmbedding}


def init_state(kind: str, e: torch.Tensor, noise_std: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """s_0 for state_init = zeros | embed | noise (truncated normal at +-3 std, as in Huginn)."""
    if kind == "zeros":
        return torch.zeros_like(e)
    if kind == "embed":
        return e
    noise = torch.empty(e.shape, dtype=torch.float32, device=e.device)
    nn.init.trunc_normal_(noise, std=noise_std, a=-3 * noise_std, b=3 * noise_std,
                          generator=generator)
    return noise.to(e.dtype)


def split_steps(num_steps) -> tuple[int, int]:
    """num_steps -> (steps without grad, steps with grad), with a clear error on bad input."""
    if isinstance(num_steps, int) and not isinstance(num_steps, bool):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        return 0, num_steps
    if (isinstance(num_steps, (tuple, list)) and len(num_steps) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in num_steps)):
        n_nograd, n_grad = num_steps
        if n_nograd < 0 or n_grad < 1:
            raise ValueError("num_steps=(n_nograd, n_grad) needs n_nograd >= 0 and n_grad >= 1, "
                             f"got {tuple(num_steps)}")
        return n_nograd, n_grad
    raise ValueError("num_steps must be an int >= 1 or a pair (n_nograd, n_grad) of ints, "
                     f"got {num_steps!r}")


@dataclass
class CoreOutput:
    state: torch.Tensor  # (B, T, d): the final state (ACT: the halting-weighted state)
    steps: int  # core steps run
    states: list[torch.Tensor] | None = None  # the state after each gradient step, if collected
    token_steps: torch.Tensor | None = None  # (B, T) steps each token used (exit / ACT)
    ponder: torch.Tensor | None = None  # (B, T) ACT's N + R
    step_weights: torch.Tensor | None = None  # (B, T, steps) ACT's weight of each step


class RecurrentCore(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.injection = INJECTIONS[cfg.injection](cfg)
        self.step_embedding = STEP_EMBEDDINGS[cfg.step_embedding](cfg)
        self.blocks = nn.ModuleList(make_block(cfg) for _ in range(cfg.n_core))
        # A pre-norm residual stream grows with every step (|s_T| ~ T under "add"); renormalising
        # the stack's output keeps the state bounded. Sandwich blocks already end in a norm, and
        # the LTI update bounds the state itself.
        renormalise = cfg.norm == "pre" and cfg.injection != "lti"
        self.out_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if renormalise else nn.Identity()
        self.halting = HaltingUnit(cfg) if cfg.halting == "act" else None
        self._compiled_update = None  # set by compile_update()

    def compile_update(self, **options) -> None:
        """torch.compile one uncached state update (see Backbone.compile_regions)."""
        self._compiled_update = torch.compile(self._update, **options)

    def step(self, s: torch.Tensor, injected: torch.Tensor, t: int, ctx: AttentionContext):
        """s_{t+1} from s_t; `injected` = self.injection.prepare(e)."""
        p = self.step_embedding(t, s)
        if ctx.cache is None and self._compiled_update is not None:
            # The compiled update never sees t, so every step reuses one graph.
            return self._compiled_update(s, injected, p, ctx)
        return self._update(s, injected, p, ctx, t)

    def _update(self, s, injected, p, ctx: AttentionContext, t: int | None = None):
        # t names the KV-cache slots ("core", t, i); it is unused without a cache.
        return self.injection(s, injected, p, lambda x: self._run_blocks(x, ctx, t))

    def _run_blocks(self, x: torch.Tensor, ctx: AttentionContext, t: int | None):
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, ("core", t, i))
        return self.out_norm(x)

    def forward(self, e: torch.Tensor, ctx: AttentionContext, num_steps, *,
                generator: torch.Generator | None = None, collect_states: bool = False,
                exit_rule: ExitRule | None = None,
                probe: Callable[[torch.Tensor], torch.Tensor] | None = None,
                initial_state: torch.Tensor | None = None) -> CoreOutput:
        """Unroll the core.

        num_steps: an int, or (n_nograd, n_grad) for truncated backprop (Huginn): the first
        n_nograd steps store no activations, so training memory does not grow with them.
        exit_rule: stop each token once its criterion holds (after min_steps); an exited token
        keeps its state frozen. probe(state) -> logits feeds the logit-based criteria.
        initial_state: s_0 instead of init(e) (continuous chain-of-thought warm start).
        """
        if exit_rule is not None and self.halting is not None:
            raise ValueError("exit_criterion and learned halting (halting='act') exclude each "
                             "other: ACT already decides when each token stops")
        n_nograd, n_grad = split_steps(num_steps)
        total = n_nograd + n_grad
        s = initial_state if initial_state is not None else init_state(
            self.cfg.state_init, e, self.cfg.noise_std, generator)
        injected = self.injection.prepare(e)
        tracker = ExitTracker(exit_rule, probe) if exit_rule is not None else None
        act = ACTAccumulator(self.halting, s, total) if self.halting is not None else None
        active = ctx.token_mask.clone() if tracker is not None else None
        token_steps = torch.zeros_like(ctx.token_mask, dtype=torch.long)
        states = [] if collect_states else None
        grad = torch.is_grad_enabled()
        steps_run = 0
        for t in range(total):
            with torch.set_grad_enabled(grad and t >= n_nograd):
                s_next = self.step(s, injected, t, ctx)
                if active is not None:  # exited tokens keep their state
                    s_next = torch.where(active[..., None], s_next, s)
            s, steps_run = s_next, t + 1
            if states is not None and t >= n_nograd:
                states.append(s)
            if tracker is not None:
                token_steps += active.long()
                done = tracker.converged(s)
                if done is not None and t + 1 >= exit_rule.min_steps:
                    active &= ~(done if done.dim() == 2 else done[:, None])
                running = active
            elif act is not None:
                running = act.add(t, s)
            else:
                continue
            # Skipping finished work is safe only without autograd: a data-dependent number
            # of steps in training would desynchronise data-parallel ranks (FSDP deadlocks).
            if not grad and not running.any():
                break
        if act is not None:
            return CoreOutput(state=act.output.to(s.dtype), steps=steps_run, states=states,
                              token_steps=act.steps, ponder=act.ponder(),
                              step_weights=torch.stack(act.weights, dim=-1))
        if tracker is None:
            token_steps.fill_(steps_run)
        return CoreOutput(state=s, steps=steps_run, states=states, token_steps=token_steps)

    def spectral_radius(self) -> float | None:
        """Spectral radius of the linear state-to-state map A for injection='lti', else None."""
        if not isinstance(self.injection, LTIInjection):
            return None
        return float(self.injection.decay().detach().max())


class FixedDepthCore(nn.Module):
    """The no-recurrence baseline: fixed_depth untied copies of the core, each applied once.

    Built from the same injection and blocks as RecurrentCore, so a comparison isolates weight
    sharing. fixed_depth = 1 matches the looped model's parameters; fixed_depth = the mean
    training depth matches its compute. num_steps is validated but does not change the depth.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(RecurrentCore(cfg) for _ in range(cfg.fixed_depth))

    def forward(self, e: torch.Tensor, ctx: AttentionContext, num_steps, *,
                generator: torch.Generator | None = None, collect_states: bool = False,
                exit_rule: ExitRule | None = None, probe=None,
                initial_state: torch.Tensor | None = None) -> CoreOutput:
        split_steps(num_steps)
        if exit_rule is not None or initial_state is not None:
            raise ValueError("the fixed-depth baseline has no exits and no warm start")
        s = init_state(self.cfg.state_init, e, self.cfg.noise_std, generator)
        for t, layer in enumerate(self.layers):
            s = layer.step(s, layer.injection.prepare(e), t, ctx)
        return CoreOutput(state=s, steps=len(self.layers), states=[s] if collect_states else None,
                          token_steps=torch.full_like(ctx.token_mask, len(self.layers),
                                                      dtype=torch.long))

    def compile_update(self, **options) -> None:
        for layer in self.layers:
            layer.compile_update(**options)

    def spectral_radius(self) -> float | None:
        return None
