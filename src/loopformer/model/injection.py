"""How the state and the input meet in a core step, and the other per-step variants: state
init and step embedding. Each is a small module or function chosen by one config value.

`e` = prelude output, `s_t` = state, `B` = the shared blocks, `p_t` = step embedding (added to
the blocks' input).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig

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

    def reset_parameters(self) -> None:
        """After the default init (init_weights): the identity-biased gate."""
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
        self.half = cfg.d_model // 2
        self.register_buffer("inv_freq", self._frequencies(torch.device("cpu")),
                             persistent=False)

    def _frequencies(self, device: torch.device) -> torch.Tensor:
        steps = torch.arange(self.half, dtype=torch.float32, device=device)
        return torch.exp(-math.log(10000.0) * steps / self.half)

    def reset_buffers(self) -> None:
        """Rebuild the frequencies (not saved with the weights) on their current device."""
        self.inv_freq = self._frequencies(self.inv_freq.device)

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
