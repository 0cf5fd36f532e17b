"""Zero-shot per-token exit criteria: stop a token's recurrence once it has converged.

Each criterion compares a token's step t with its step t-1 and says, per token, whether it may
stop. Defaults follow Huginn (Geiping et al. 2025) and Loop-Think-Generalize:

| criterion          | a token stops when                                   | default threshold |
|--------------------|------------------------------------------------------|-------------------|
| `kl`               | KL(p_{t-1} || p_t) < threshold                       | 5e-4              |
| `entropy-diff`     | abs(H(p_t) - H(p_{t-1})) < threshold                 | 1e-3              |
| `latent-diff`      | ||s_t - s_{t-1}|| / ||s_t|| < threshold              | 0.03              |
| `cosine`           | 1 - cos(s_t, s_{t-1}) < threshold                    | 1e-3              |
| `argmax-stability` | argmax p unchanged for `threshold` consecutive steps | 5                 |
| `kl-entropy`       | KL < threshold and H(p_t) < `exit_entropy`           | 5e-4, 0.1 nats    |

`p_t` is the readout's distribution after step t (the coda and head run on every step's
state); the two latent criteria need no readout. A stopped token keeps its state frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ModelConfig
from .observers import CoreOutput, StepObserver

DEFAULT_THRESHOLDS = {"kl": 5e-4, "entropy-diff": 1e-3, "latent-diff": 0.03, "cosine": 1e-3,
                      "argmax-stability": 5, "kl-entropy": 5e-4}
LATENT_CRITERIA = ("latent-diff", "cosine")
DEFAULT_EXIT_ENTROPY = 0.1

Probe = Callable[[torch.Tensor], torch.Tensor]  # a core state -> the readout's logits


@dataclass
class ExitRule:
    criterion: str
    threshold: float | None = None  # None = the default of the criterion
    min_steps: int = 1
    exit_entropy: float = DEFAULT_EXIT_ENTROPY

    def __post_init__(self):
        if self.criterion not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown exit_criterion {self.criterion!r}; choose one of "
                             f"{sorted(DEFAULT_THRESHOLDS)}")
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.criterion]
        if self.threshold < 0:
            raise ValueError(f"exit_threshold must be >= 0, got {self.threshold}")
        if self.min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {self.min_steps}")

    @property
    def needs_logits(self) -> bool:
        return self.criterion not in LATENT_CRITERIA

    def observer(self, cfg: ModelConfig, token_mask: torch.Tensor,
                 probe: Probe) -> "ExitObserver":
        """The observer that applies this rule in a model built from `cfg`; `probe` is used
        only by the criteria that judge the readout's distribution."""
        if cfg.halting != "none":
            raise ValueError("exit_criterion and learned halting (halting='act') exclude each "
                             "other: ACT already decides when each token stops")
        return ExitObserver(self, token_mask, probe if self.needs_logits else None)


class ExitObserver(StepObserver):
    """Keeps what a criterion needs from the previous step and stops converged tokens."""

    freezes_stopped = True

    def __init__(self, rule: ExitRule, token_mask: torch.Tensor, probe: Probe | None):
        if rule.needs_logits and probe is None:
            raise ValueError(f"exit_criterion={rule.criterion!r} needs the readout's "
                             "distribution, which this model does not provide; use "
                             "'latent-diff' or 'cosine'")
        self.rule, self.probe = rule, probe
        self.active = token_mask.clone()  # padding never runs
        self.token_steps = torch.zeros_like(token_mask, dtype=torch.long)
        self.prev_state = self.prev_logp = self.prev_argmax = self.prev_entropy = None
        self.stable = None  # steps for which the argmax has not changed

    def start(self, state, depth):
        return self.active

    def observe(self, step, state):
        self.token_steps += self.active.long()
        done = self.converged(state)
        if done is not None and step + 1 >= self.rule.min_steps:
            self.active &= ~(done if done.dim() == 2 else done[:, None])
        return self.active

    def finish(self, out: CoreOutput) -> None:
        out.token_steps = self.token_steps

    @torch.no_grad()
    def converged(self, state: torch.Tensor) -> torch.Tensor | None:
        """Record step t's state; return (B, T) or (B,) bool, or None at the first step."""
        rule, s = self.rule, state.float()
        done = None
        if rule.needs_logits:
            logp = torch.log_softmax(self.probe(state).float(), dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)
            if self.prev_logp is not None:
                kl = (self.prev_logp.exp() * (self.prev_logp - logp)).sum(-1)
                if rule.criterion == "kl":
                    done = kl < rule.threshold
                elif rule.criterion == "kl-entropy":
                    done = (kl < rule.threshold) & (entropy < rule.exit_entropy)
                elif rule.criterion == "entropy-diff":
                    done = (entropy - self.prev_entropy).abs() < rule.threshold
            argmax = logp.argmax(-1)
            if rule.criterion == "argmax-stability":
                if self.prev_argmax is None:
                    self.stable = torch.zeros_like(argmax)
                else:
                    self.stable = torch.where(argmax == self.prev_argmax, self.stable + 1, 0)
                    done = self.stable >= rule.threshold
            self.prev_logp, self.prev_entropy, self.prev_argmax = logp, entropy, argmax
        else:
            if self.prev_state is not None and rule.criterion == "latent-diff":
                change = (s - self.prev_state).norm(dim=-1) / s.norm(dim=-1).clamp_min(1e-12)
                done = change < rule.threshold
            elif self.prev_state is not None:
                cosine = torch.nn.functional.cosine_similarity(s, self.prev_state, dim=-1)
                done = (1 - cosine) < rule.threshold
            self.prev_state = s
        return done
