"""Adaptive depth over many examples at a steady batch size (continuous batching).

With an exit rule, a batch's examples stop at their own depths, but the batch runs until its
deepest example is done, with fewer and fewer rows. Here an example that exits hands its row
to the next waiting one at once, so every step runs `width` rows until the queue is empty:
the loop runs about sum(steps) / width times instead of (number of batches) x (deepest step).

Every example is computed exactly as a batch of its own with the same exit rule: rows never
attend to each other, an example's steps are counted from its own start, and it stops when the
rule (judged on its own readout) says so or after `max_steps`.
"""

from __future__ import annotations

import torch

from ..model.core import RecurrentCore
from ..model.exits import ExitRule, judge_readout
from ..model.injection import init_state
from ..tasks.interfaces import TaskModel, _rows_of


@torch.no_grad()
def stream_answers(model: TaskModel, batch: dict, rule: ExitRule, max_steps: int,
                   width: int = 16, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The answers' logits (N, classes) and each example's core steps (N,) for the N examples
    of `batch` (collated together, so that any waiting example fits any free row), at most
    `width` of them in the loop at a time."""
    check_streamable(model, rule)
    backbone = model.backbone
    core, cfg = backbone.core, backbone.cfg
    x, ctx = model.embed_inputs(batch)
    e = backbone.encode(x, ctx)
    injected = core.injection.prepare(e)
    state = init_state(cfg.state_init, e, cfg.noise_std, generator)
    n = len(state)
    steps = torch.zeros(n, dtype=torch.long, device=state.device)
    answers = records = None  # (N, classes) logits at exit; the readout records by example
    step_codes: dict[int, torch.Tensor] = {}  # step embeddings by step index
    live, waiting = torch.arange(min(width, n), device=state.device), min(width, n)
    while len(live):
        p = None  # the step embedding, per row: rows are at different steps
        if cfg.step_embedding != "none":
            row_steps = steps[live].tolist()
            for t in set(row_steps) - step_codes.keys():
                step_codes[t] = core.step_embedding(t, state)
            p = torch.stack([step_codes[t] for t in row_steps])[:, None, :]
        s_live = core(state[live], injected[live], p, ctx.select_rows(live))
        state[live] = s_live
        steps[live] += 1
        logits = model.readout(*_rows_of(backbone.decode, s_live, ctx, batch, live))
        logp = torch.log_softmax(logits, -1, dtype=torch.float32)
        if records is None:
            answers = logits.new_zeros(n, logits.shape[-1])
            # (an argmax of -1 matches none: a first step starts the count of stable steps)
            records = {k: v.new_full((n, *v.shape[1:]), -1 if k == "argmax" else 0) for k, v
                       in judge_readout(rule, logp, None)[1].items()}
        started = steps[live] > 1  # rows past their first step have an earlier record
        done, record = judge_readout(rule, logp, {k: v[live] for k, v in records.items()})
        for k, v in record.items():
            records[k][live] = v
        done = started & done & (steps[live] >= rule.min_steps) | (steps[live] >= max_steps)
        answers[live[done]] = logits[done]
        refill = torch.arange(waiting, min(waiting + int(done.sum()), n), device=live.device)
        waiting += len(refill)
        live = torch.cat((live[~done], refill))
    return answers, steps


def check_streamable(model: TaskModel, rule: ExitRule) -> None:
    cfg = model.backbone.cfg
    if not isinstance(model.backbone.core, RecurrentCore):
        raise ValueError("streaming needs the recurrent core (core='recurrent')")
    if not rule.needs_logits:
        raise ValueError(f"streaming judges each example's readout; {rule.criterion!r} judges "
                         "each token's state: choose kl, kl-entropy, entropy-diff or "
                         "argmax-stability")
    if cfg.halting != "none":
        raise ValueError("streaming stops examples by an exit rule; halting='act' decides "
                         "each token's steps itself")
    if cfg.step_lora_rank or cfg.ffn == "moe":
        raise ValueError("streaming runs examples at different steps in one batch, which "
                         "per-step adapters (step_lora_rank) and MoE step tables do not "
                         "support: evaluate with exit_rule in fixed batches instead")
