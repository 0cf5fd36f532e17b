"""Adaptive depth over many examples at a steady batch size (continuous batching).

With an exit rule, a batch's examples stop at their own depths, but the batch runs until its
deepest example is done, with fewer and fewer rows. Here an example that exits hands its row
to the next waiting one at once, so every step runs `width` rows until the queue is empty:
the loop runs about sum(steps) / width times instead of (number of batches) x (deepest step).

Every example is computed exactly as a batch of its own with the same exit rule: rows never
attend to each other, an example's steps are counted from its own start, and it stops when the
rule (judged on its own readout) says so or after `max_steps`. (With state_init="noise" its
initial state is a different draw than alone.)
"""

from __future__ import annotations

import torch

from ..model.core import RecurrentCore
from ..model.exits import ExitRule, judge_readout
from ..model.injection import init_state
from ..tasks.interfaces import TaskModel, batch_rows


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
    first = init_state(cfg.state_init, e, cfg.noise_std, generator)
    n, device = len(first), first.device
    answers, spent = None, torch.zeros(n, dtype=torch.long, device=device)
    step_codes: dict[int, torch.Tensor] = {}  # step embeddings by step index
    # The pool: row i holds example slot[i], at its own step; records: the readout's last.
    slot = torch.arange(min(width, n), device=device)
    waiting = len(slot)
    s, inj, steps, records = first[slot], injected[slot], torch.zeros_like(slot), None
    slot_ctx, slot_batch = ctx.select_rows(slot), batch_rows(batch, slot, n)
    while len(slot):
        p = None  # the step embedding, per row: rows are at different steps
        if cfg.step_embedding != "none":
            row_steps = steps.tolist()
            for t in set(row_steps) - step_codes.keys():
                step_codes[t] = core.step_embedding(t, s)
            p = torch.stack([step_codes[t] for t in row_steps])[:, None, :]
        s = core(s, inj, p, slot_ctx)
        steps += 1
        logits = model.readout(backbone.decode(s, slot_ctx), slot_batch)
        logp = torch.log_softmax(logits, -1, dtype=torch.float32)
        done, records = judge_readout(rule, logp, records)
        if answers is None:  # the first step of the first rows
            answers = logits.new_zeros(n, logits.shape[-1])
            done = torch.zeros_like(steps, dtype=torch.bool)
        # A row's first step has no earlier record to be judged against.
        done = done & (steps > 1) & (steps >= rule.min_steps) | (steps >= max_steps)
        if not done.any():  # one host sync per step
            continue
        answers[slot[done]], spent[slot[done]] = logits[done], steps[done]
        free = done.nonzero().squeeze(1)
        refill, drop = free[:n - waiting], free[n - waiting:]
        if len(refill):  # the next examples take these rows, at their first step
            slot[refill] = torch.arange(waiting, waiting + len(refill), device=device)
            waiting += len(refill)
            s[refill], inj[refill], steps[refill] = first[slot[refill]], injected[slot[refill]], 0
            for key, record in records.items():  # an argmax of -1 matches none
                record[refill] = -1 if key == "argmax" else 0
        if len(drop):  # nothing left to wait: the pool shrinks
            keep = torch.ones_like(done).index_fill_(0, drop, False)
            slot, s, inj, steps = slot[keep], s[keep], inj[keep], steps[keep]
            records = {key: record[keep] for key, record in records.items()}
        slot_ctx, slot_batch = ctx.select_rows(slot), batch_rows(batch, slot, n)
    return answers, spent


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
