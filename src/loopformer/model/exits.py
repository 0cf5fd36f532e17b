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

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ModelConfig
from .observers import CoreOutput, StepObserver

DEFAULT_THRESHOLDS = {"kl": 5e-4, "entropy-diff": 1e-3, "latent-diff": 0.03, "cosine": 1e-3,
                      "argmax-stability": 5, "kl-entropy": 5e-4}
LATENT_CRITERIA = ("latent-diff", "cosine")
DEFAULT_EXIT_ENTROPY = 0.1

# (core states of some batch rows, their indices or None for all, the (rows, T) mask of their
# running tokens) -> the readout's logits: per row (rows, classes), or with a per-token probe
# (a language model's head) only for the running tokens, (running tokens, vocab).
Probe = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


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

    def observer(self, cfg: ModelConfig, token_mask: torch.Tensor, probe: Probe,
                 per_token: bool = False) -> "ExitObserver":
        """The observer that applies this rule in a model built from `cfg`; `probe` is used
        only by the criteria that judge the readout's distribution; `per_token`: the probe
        reads out each running token (else each batch row)."""
        if cfg.halting != "none":
            raise ValueError("exit_criterion and learned halting (halting='act') exclude each "
                             "other: ACT already decides when each token stops")
        return ExitObserver(self, token_mask, probe if self.needs_logits else None, per_token)


class ExitObserver(StepObserver):
    """Keeps what a criterion needs from the previous step and stops converged tokens.

    Only what still runs is judged: the running tokens (latent criteria, per-token probes) or
    the batch rows that still have one (per-row probes). Tokens only ever stop, so whatever is
    judged at step t was recorded at step t - 1."""

    freezes_stopped = True

    def __init__(self, rule: ExitRule, token_mask: torch.Tensor, probe: Probe | None,
                 per_token: bool = False):
        if rule.needs_logits and probe is None:
            raise ValueError(f"exit_criterion={rule.criterion!r} needs the readout's "
                             "distribution, which this model does not provide; use "
                             "'latent-diff' or 'cosine'")
        self.rule, self.probe = rule, probe
        self.by_token = per_token or not rule.needs_logits
        self.active = token_mask.clone()  # padding never runs
        self.running = int(self.active.sum())  # how many run; counted again when some stop
        self.stopped_after = torch.zeros_like(token_mask, dtype=torch.long)  # for finish
        self.judged = None  # the (B, T) tokens or (B,) rows the records cover; None: all
        self.count = -1  # how many the records cover
        self.prev_state = self.record = None  # the previous step's state / readout record

    def start(self, state, depth):
        return self.mask()

    def mask(self) -> torch.Tensor | None:
        """The running tokens; None while every token runs, which spares the loop its
        freezing and bookkeeping (a step's fixed cost matters at small sizes)."""
        return None if self.running == self.active.numel() else self.active

    def observe(self, step, state):
        running = self.running
        if running == 0:  # all stopped (with autograd the loop goes on)
            return self.active
        rows = judged = None  # None: every row / everything is judged
        if running < self.active.numel():
            row_mask = self.active.any(-1)
            rows = row_mask.nonzero().squeeze(1)
            if len(rows) == len(row_mask):
                rows = None
            if self.by_token:
                judged = self.active
            elif rows is not None:
                judged = row_mask
        count = running if self.by_token else (len(self.active) if rows is None else len(rows))
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            done = self.converged(state, rows, judged, count, step)
        # `done` holds True only for what was judged, which runs: one host sync per step
        if done is not None and step + 1 >= self.rule.min_steps and done.any():
            stopping = self.active & (done if done.dim() == 2 else done[:, None])
            self.active = self.active & ~stopping
            self.running = int(self.active.sum())
            self.stopped_after.masked_fill_(stopping, step + 1)  # these ran steps 0 .. step
        return self.mask()

    def finish(self, out: CoreOutput) -> None:
        # Tokens still running ran every step of the loop; padding ran none.
        out.token_steps = torch.where(self.active, out.steps, self.stopped_after)

    def converged(self, state: torch.Tensor, rows: torch.Tensor | None,
                  judged: torch.Tensor | None, count: int, step: int) -> torch.Tensor | None:
        """Record step t for what is judged: the running tokens ((B, T) mask) or the rows
        that still have one ((B,) mask), None: all; `rows`: indices of the rows with a running
        token (None: all); `count`: how many are judged. Return (B, T) or (B,) bool, False
        for what was not judged, or None at the first step. A record holds only what was
        judged, in order; what is judged only shrinks, so an unchanged count is the same set."""
        rule = self.rule
        last, before, self.judged, self.count = self.judged, self.count, judged, count
        prev = lambda record: record if count == before else \
            record[judged if last is None else judged[last]]
        done = None
        if rule.needs_logits:
            part = state if rows is None else state[rows]
            running = None if judged is None else self.active if rows is None else \
                self.active[rows]
            logp = torch.log_softmax(self.probe(part, rows, running), -1, dtype=torch.float32)
            earlier = None if step == 0 else self.record if count == before else \
                {k: prev(v) for k, v in self.record.items()}
            done, self.record = judge_readout(rule, logp, earlier)
        else:
            s = (state if judged is None else state[judged]).float()
            if step > 0:
                earlier = prev(self.prev_state)
                if rule.criterion == "latent-diff":
                    done = (s - earlier).norm(dim=-1) / s.norm(dim=-1).clamp_min(1e-12) < \
                        rule.threshold
                else:
                    done = 1 - torch.nn.functional.cosine_similarity(s, earlier, dim=-1) < \
                        rule.threshold
            self.prev_state = s
        if done is None or judged is None:
            return done
        return torch.zeros_like(judged).index_put((judged,), done)


def judge_readout(rule: ExitRule, logp: torch.Tensor,
                  earlier: dict | None) -> tuple[torch.Tensor | None, dict]:
    """One step of a criterion on the readout: `logp` the log-probabilities of the judged
    items (..., classes), `earlier` their record from the previous step (None: this is their
    first). Returns which may stop (None at the first step) and this step's record."""
    p = logp.exp()
    neg_entropy = torch.linalg.vecdot(p, logp)
    record = {"p": p, "neg_entropy": neg_entropy}
    done = None
    if rule.criterion == "argmax-stability":
        argmax = logp.argmax(-1)
        record["argmax"] = argmax
        # steps for which the argmax has not changed
        record["stable"] = torch.zeros_like(argmax) if earlier is None else torch.where(
            argmax == earlier["argmax"], earlier["stable"] + 1, 0)
        done = None if earlier is None else record["stable"] >= rule.threshold
    elif earlier is not None and rule.criterion in ("kl", "kl-entropy"):
        # KL(p_{t-1} || p_t) = sum p_{t-1} log p_{t-1} - sum p_{t-1} log p_t: two dot products
        # instead of a pass over every difference.
        kl = (earlier["neg_entropy"] - torch.linalg.vecdot(earlier["p"], logp)).clamp_min(0)
        done = kl < rule.threshold
        if rule.criterion == "kl-entropy":
            done &= -neg_entropy < rule.exit_entropy
    elif earlier is not None:  # entropy-diff
        done = (earlier["neg_entropy"] - neg_entropy).abs() < rule.threshold
    return done, record
