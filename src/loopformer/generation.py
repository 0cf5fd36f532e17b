"""Decoding with a LoopLM: sampling, eos handling, warm start and self-speculative decoding.

`LoopLM.generate` and `LoopLM.generate_speculative` call these functions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .compile import compile_regions
from .model.cache import KVCache
from .model.depth import Depth
from .model.lm import LoopLM
from .model.static_decoding import StaticDecoder


@torch.no_grad()
def generate(model: LoopLM, input_ids: torch.Tensor, max_new_tokens: int = 16, num_steps=None,
             *, attention_mask: torch.Tensor | None = None, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | None = None, pad_token_id: int | None = None,
             generator: torch.Generator | None = None, exit_criterion: str | None = None,
             exit_threshold: float | None = None, min_steps: int = 1,
             warm_start: bool = False, cache: KVCache | None = None,
             streamer: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
             compile: bool = False) -> torch.Tensor:
    """Autoregressive decoding with the KV cache; returns prompt + new tokens (B, T + n).

    A sequence that has produced `eos_token_id` is continued with `pad_token_id` (default:
    the eos id), and decoding stops once every sequence has finished. exit_criterion makes
    each token think only until it converges (num_steps is the maximum). warm_start
    (continuous chain-of-thought) starts each new token's state from the previous token's
    final state instead of init(e). `cache` is an empty KVCache to fill, to choose its mode or
    compression (default: exact, or "latest" with an exit criterion). `streamer(tokens,
    steps)` is called with each new token (B,) and the core steps it took (B,) as it comes.

    At a fixed depth (no exit criterion) every new token is one call at fixed shapes
    (loopformer.model.static_decoding). `compile=True` compiles the model first
    (`compile_regions`, once per model): the prompt then runs through compiled regions and
    each new token through one compiled graph covering every thinking step.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 when sampling, got "
                         f"{temperature}")
    check_token_ids(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")
    if cache is not None and cache.seq_len:
        raise ValueError("generate() fills a new cache: pass an empty KVCache")
    model.check_input_ids(input_ids)
    total = input_ids.shape[1] + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(f"prompt of {input_ids.shape[1]} tokens + max_new_tokens="
                         f"{max_new_tokens} exceeds max_seq_len={model.cfg.max_seq_len}")
    depth = Depth.of(model.cfg.mean_steps if num_steps is None else num_steps)
    pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
    options = dict(generator=generator, exit_criterion=exit_criterion,
                   exit_threshold=exit_threshold, min_steps=min_steps, use_cache=True)
    new_tokens = []  # joined once at the end: no copy of the whole sequence per token
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    if compile and not is_compiled(model):
        compile_regions(model)
    out = model(input_ids, depth, attention_mask=attention_mask, past_key_values=cache,
                **options)
    decoder = None
    if exit_criterion is None and StaticDecoder.applies(model, out.past_key_values, depth):
        decoder = StaticDecoder(model, out.past_key_values, depth, max_new_tokens)
    logits, steps, state = out.logits[:, -1], out.steps, out.state[:, -1:]
    for _ in range(max_new_tokens):
        next_token = pick_next_token(logits.float(), do_sample, temperature, top_k, top_p,
                                     generator)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, pad_token_id),
                                     next_token)
            finished |= next_token == eos_token_id
        new_tokens.append(next_token)
        if streamer is not None:
            streamer(next_token, steps[:, -1] if steps is not None else
                     torch.full_like(next_token, depth.total))
        if eos_token_id is not None and bool(finished.all()):
            break
        if len(new_tokens) == max_new_tokens:
            break
        initial_state = state if warm_start else None
        if decoder is not None:
            logits, state = decoder.step(next_token, initial_state, generator)
        else:
            out = model(next_token[:, None], depth, past_key_values=out.past_key_values,
                        initial_state=initial_state, **options)
            logits, steps, state = out.logits[:, -1], out.steps, out.state[:, -1:]
    if decoder is not None:
        decoder.finish()
    return torch.cat((input_ids, *(token[:, None] for token in new_tokens)), dim=1)


def is_compiled(model: LoopLM) -> bool:
    """Whether compile_regions has compiled this model (its decode_token is an instance's)."""
    return "decode_token" in vars(model)


@torch.no_grad()
def generate_speculative(model: LoopLM, input_ids: torch.Tensor, max_new_tokens: int = 16,
                         num_steps: int | None = None, draft_steps: int = 2,
                         draft_tokens: int = 4,
                         eos_token_id: int | None = None) -> tuple[torch.Tensor, dict]:
    """Self-speculative greedy decoding: draft `draft_tokens` tokens with `draft_steps` core
    steps, then verify them all in one pass at `num_steps`; keep the longest agreeing prefix
    plus the verifier's next token. The output equals `generate(..., do_sample=False)` at
    `num_steps`, because every kept token is the verifier's argmax given an exactly cached
    prefix. Batch size 1. Returns (tokens, stats).
    """
    num_steps = model.cfg.mean_steps if num_steps is None else num_steps
    if input_ids.shape[0] != 1:
        raise ValueError("generate_speculative decodes one sequence at a time (batch 1)")
    if not 1 <= draft_steps <= num_steps:
        raise ValueError(f"draft_steps must lie in [1, num_steps={num_steps}], got "
                         f"{draft_steps}")
    if draft_tokens < 1:
        raise ValueError(f"draft_tokens must be >= 1, got {draft_tokens}")
    check_token_ids(model, eos_token_id=eos_token_id)
    model.check_input_ids(input_ids)
    limit = input_ids.shape[1] + max_new_tokens
    if limit + draft_tokens > model.cfg.max_seq_len:
        raise ValueError(f"prompt + max_new_tokens + draft_tokens = {limit + draft_tokens} "
                         f"exceeds max_seq_len={model.cfg.max_seq_len}")
    verify = model(input_ids[:, :-1], num_steps, use_cache=True).past_key_values \
        if input_ids.shape[1] > 1 else KVCache()
    draft = KVCache()
    tokens = input_ids[0].tolist()
    stats = {"rounds": 0, "drafted": 0, "accepted": 0}
    # Invariant: `verify` caches every token but the last; `draft` caches a prefix.
    while len(tokens) < limit and not (eos_token_id is not None and tokens[-1] == eos_token_id
                                       and len(tokens) > input_ids.shape[1]):
        guesses = []
        pending = tokens[draft.seq_len:]
        for _ in range(min(draft_tokens, limit - len(tokens))):
            ids = torch.tensor([pending], device=input_ids.device)
            logits = model(ids, draft_steps, past_key_values=draft, use_cache=True).logits
            guesses.append(int(logits[0, -1].argmax()))
            pending = guesses[-1:]
        ids = torch.tensor([tokens[-1:] + guesses], device=input_ids.device)
        checks = model(ids, num_steps, past_key_values=verify,
                       use_cache=True).logits[0].argmax(-1).tolist()
        accepted = 0
        while accepted < len(guesses) and guesses[accepted] == checks[accepted]:
            accepted += 1
        new = guesses[:accepted] + [checks[accepted]]
        stats["rounds"] += 1
        stats["drafted"] += len(guesses)
        stats["accepted"] += accepted
        if eos_token_id is not None and eos_token_id in new:
            new = new[:new.index(eos_token_id) + 1]
        tokens += new[:limit - len(tokens)]
        verify.truncate(len(tokens) - 1)
        draft.truncate(min(draft.seq_len, len(tokens) - 1))
    stats["acceptance_rate"] = stats["accepted"] / max(stats["drafted"], 1)
    return torch.tensor([tokens], device=input_ids.device), stats


def check_token_ids(model: LoopLM, **tokens: int | None) -> None:
    for name, token in tokens.items():
        if token is not None and not 0 <= token < model.cfg.vocab_size:
            raise ValueError(f"{name} must lie in [0, {model.cfg.vocab_size}) "
                             f"(ModelConfig.vocab_size), got {token}")


def pick_next_token(logits: torch.Tensor, do_sample: bool, temperature: float,
                    top_k: int | None, top_p: float | None,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Greedy argmax, or a sample after temperature, top-k and top-p (nucleus) filtering."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the tokens before it already cover top_p; the top token always stays.
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
