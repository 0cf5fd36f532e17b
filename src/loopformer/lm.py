"""LoopLM: the language-model interface around the recurrent-depth backbone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .cache import KVCache, SlotWriter
from .config import ModelConfig
from .core import CoreOutput, GatedInjection, split_steps
from .exits import DEFAULT_EXIT_ENTROPY, ExitRule
from .halting import HaltingUnit
from .layers import AttentionContext


@dataclass
class LoopLMOutput:
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor | None = None
    past_key_values: KVCache | None = None
    steps: torch.Tensor | None = None  # (B, T): core steps each token used
    state: torch.Tensor | None = None  # (B, T, d): the final core state of each token
    ponder: torch.Tensor | None = None  # (B, T): ACT's ponder cost N + R, if halting="act"


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for every linear and embedding weight, then the modules that need a
    special start (gate bias, halting unit) reset theirs."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
    for m in module.modules():
        if isinstance(m, GatedInjection):
            m.reset_gate()
        if isinstance(m, HaltingUnit):
            m.reset_parameters()


class LoopLM(nn.Module):
    """Token embedding -> prelude -> core looped num_steps times -> coda -> tied LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = Backbone(cfg)
        self._loss_fn = next_token_loss
        self._compiled_cached = None  # set by compile_regions()
        init_weights(self, cfg.init_std)

    def compile_regions(self, **options) -> None:
        """torch.compile (options go to it) the backbone's repeated regions
        (Backbone.compile_regions); the loss, whose log-softmax and gradient then fuse into
        one pass over the logits; and cached decoding, as one graph per call with symbolic
        sequence lengths, compiled once per number of steps."""
        self.backbone.compile_regions(**options)
        self._loss_fn = torch.compile(next_token_loss, **options)
        self._compiled_cached = torch.compile(self._cached_logits, **{"dynamic": True,
                                                                      **options})

    @property
    def core(self):
        return self.backbone.core

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def spectral_radius(self) -> float | None:
        """rho of the state-to-state linear map for injection='lti', else None."""
        return self.core.spectral_radius()

    def check_input_ids(self, input_ids: torch.Tensor, past: int = 0) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int16,
                                                           torch.uint8):
            raise ValueError("input_ids must be an integer tensor of shape (batch, seq_len), got "
                             f"{input_ids.dtype} {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: pass at least one token")
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}) "
                             f"(ModelConfig.vocab_size), got ids in [{low}, {high}]")
        if past + input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence of {past + input_ids.shape[1]} tokens ({past} cached + "
                f"{input_ids.shape[1]} new) exceeds max_seq_len={self.cfg.max_seq_len}; "
                "truncate the input or build the model with a larger ModelConfig.max_seq_len")

    def forward(self, input_ids: torch.Tensor, num_steps=None, *,
                attention_mask: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                exit_criterion: str | None = None, exit_threshold: float | None = None,
                min_steps: int = 1, exit_entropy: float = DEFAULT_EXIT_ENTROPY,
                initial_state: torch.Tensor | None = None) -> LoopLMOutput:
        """Logits for input_ids after num_steps core steps (see RecurrentCore.forward).

        exit_criterion: per-token early exit (see loopformer.exits); num_steps is then the
        maximum and out.steps says what each token used. A new cache for adaptive depth uses
        the "latest" fallback, so a token that stopped early can be attended at any depth.
        """
        num_steps = self.cfg.mean_steps if num_steps is None else num_steps
        exit_rule = None if exit_criterion is None else ExitRule(
            exit_criterion, exit_threshold, min_steps, exit_entropy)
        cache = past_key_values
        if use_cache and cache is None:
            cache = KVCache(mode="exact" if exit_rule is None else "latest")
        if cache is not None and not self.cfg.causal:
            raise ValueError("a KV cache needs a causal model (ModelConfig.causal=True)")
        self.check_input_ids(input_ids, cache.seq_len if cache is not None else 0)

        B, T = input_ids.shape
        ctx = self.backbone.context(B, T, input_ids.device, attention_mask, cache=cache)
        writer = self._slot_writer(cache, num_steps, T, exit_rule)
        if writer is not None:  # the compiled decoding graph (see compile_regions)
            logits, state, token_steps = self._compiled_cached(
                input_ids, dataclasses.replace(ctx, cache=None), writer.buffers, writer.start,
                num_steps, initial_state)
            core_out = CoreOutput(state=state, steps=sum(split_steps(num_steps)),
                                  token_steps=token_steps)
        else:
            probe = None
            if exit_rule is not None and exit_rule.needs_logits:
                probe = lambda state: self.head(self.backbone.decode(state, ctx))
            logits, core_out = self._logits(input_ids, ctx, num_steps, generator=generator,
                                            exit_rule=exit_rule, probe=probe,
                                            initial_state=initial_state)
        if cache is not None:
            cache.commit(ctx.token_mask, ctx.positions)
        loss = None
        if labels is not None:
            loss = self._loss_fn(logits, labels)
        return LoopLMOutput(logits=logits, loss=loss,
                            past_key_values=cache if use_cache else None,
                            steps=core_out.token_steps, state=core_out.state,
                            ponder=core_out.ponder)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.embed.weight)  # tied to the input embedding

    def _logits(self, input_ids: torch.Tensor, ctx: AttentionContext, num_steps,
                **core_options) -> tuple[torch.Tensor, CoreOutput]:
        features, core_out = self.backbone(self.embed(input_ids.long()), ctx, num_steps,
                                           **core_options)
        return self.head(features), core_out

    def _cached_logits(self, input_ids, ctx: AttentionContext, buffers: dict, start: int,
                       num_steps, initial_state: torch.Tensor | None):
        """One cached call writing through a SlotWriter: what compile_regions compiles for
        decoding. The whole unrolled call is one graph, so a token costs a few hundred fused
        kernels instead of ~1,100 eager ops."""
        ctx = AttentionContext(ctx.cos, ctx.sin, ctx.mask, ctx.is_causal, ctx.positions,
                               ctx.token_mask, SlotWriter(buffers, start))
        logits, core_out = self._logits(input_ids, ctx, num_steps, initial_state=initial_state)
        return logits, core_out.state, core_out.token_steps

    def _slot_writer(self, cache: KVCache | None, num_steps, new_tokens: int,
                     exit_rule: ExitRule | None) -> SlotWriter | None:
        """Room in the cache for this call if it can run the compiled decoding graph: after
        compile_regions(), in inference, with an exact cache that holds past tokens, and
        without exit criteria, learned halting or a random initial state (data-dependent
        stops and random draws stay eager)."""
        if (self._compiled_cached is None or cache is None or exit_rule is not None
                or torch.is_grad_enabled() or self.cfg.core != "recurrent"
                or self.cfg.halting != "none" or self.cfg.state_init == "noise"):
            return None
        steps = sum(split_steps(num_steps))
        slots = [("prelude", i) for i in range(self.cfg.n_prelude)]
        slots += [("core", t, i) for t in range(steps) for i in range(self.cfg.n_core)]
        slots += [("coda", i) for i in range(self.cfg.n_coda)]
        return cache.reserve(slots, new_tokens)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 16, num_steps=None, *,
                 attention_mask: torch.Tensor | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None,
                 generator: torch.Generator | None = None, exit_criterion: str | None = None,
                 exit_threshold: float | None = None, min_steps: int = 1,
                 warm_start: bool = False, cache: KVCache | None = None) -> torch.Tensor:
        """Autoregressive decoding with the KV cache; returns prompt + new tokens (B, T + n).

        A sequence that has produced `eos_token_id` is continued with `pad_token_id` (default:
        the eos id), and decoding stops once every sequence has finished. exit_criterion makes
        each token think only until it converges (num_steps is the maximum). warm_start
        (continuous chain-of-thought) starts each new token's state from the previous token's
        final state instead of init(e). `cache` is an empty KVCache to fill, to choose its
        mode or compression (default: exact, or "latest" with an exit criterion).
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")
        if cache is not None and cache.seq_len:
            raise ValueError("generate() fills a new cache: pass an empty KVCache")
        self.check_input_ids(input_ids)
        total = input_ids.shape[1] + max_new_tokens
        if total > self.cfg.max_seq_len:
            raise ValueError(f"prompt of {input_ids.shape[1]} tokens + max_new_tokens="
                             f"{max_new_tokens} exceeds max_seq_len={self.cfg.max_seq_len}")
        pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
        options = dict(generator=generator, exit_criterion=exit_criterion,
                       exit_threshold=exit_threshold, min_steps=min_steps, use_cache=True)
        tokens = input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        out = self(input_ids, num_steps, attention_mask=attention_mask, past_key_values=cache,
                   **options)
        for _ in range(max_new_tokens):
            next_token = pick_next_token(out.logits[:, -1].float(), do_sample, temperature,
                                         top_k, top_p, generator)
            if eos_token_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, pad_token_id),
                                         next_token)
                finished |= next_token == eos_token_id
            tokens = torch.cat((tokens, next_token[:, None]), dim=1)
            if eos_token_id is not None and bool(finished.all()):
                break
            if tokens.shape[1] < total:
                out = self(next_token[:, None], num_steps, past_key_values=out.past_key_values,
                           initial_state=out.state[:, -1:] if warm_start else None, **options)
        return tokens

    @torch.no_grad()
    def generate_speculative(self, input_ids: torch.Tensor, max_new_tokens: int = 16,
                             num_steps: int | None = None, draft_steps: int = 2,
                             draft_tokens: int = 4,
                             eos_token_id: int | None = None) -> tuple[torch.Tensor, dict]:
        """Self-speculative greedy decoding: draft `draft_tokens` tokens with `draft_steps`
        core steps, then verify them all in one pass at `num_steps`; keep the longest agreeing
        prefix plus the verifier's next token. The output equals `generate(...,
        do_sample=False)` at `num_steps`, because every kept token is the verifier's argmax
        given an exactly cached prefix. Batch size 1. Returns (tokens, stats).
        """
        num_steps = self.cfg.mean_steps if num_steps is None else num_steps
        if input_ids.shape[0] != 1:
            raise ValueError("generate_speculative decodes one sequence at a time (batch 1)")
        if not 1 <= draft_steps <= num_steps:
            raise ValueError(f"draft_steps must lie in [1, num_steps={num_steps}], got "
                             f"{draft_steps}")
        if draft_tokens < 1:
            raise ValueError(f"draft_tokens must be >= 1, got {draft_tokens}")
        self.check_input_ids(input_ids)
        limit = input_ids.shape[1] + max_new_tokens
        if limit + draft_tokens > self.cfg.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens + draft_tokens = {limit + draft_tokens} "
                             f"exceeds max_seq_len={self.cfg.max_seq_len}")
        verify = self(input_ids[:, :-1], num_steps, use_cache=True).past_key_values \
            if input_ids.shape[1] > 1 else KVCache()
        draft = KVCache()
        tokens = input_ids[0].tolist()
        stats = {"rounds": 0, "drafted": 0, "accepted": 0}
        # Invariant: `verify` caches every token but the last; `draft` caches a prefix.
        while len(tokens) < limit and not (eos_token_id is not None and
                                           tokens[-1] == eos_token_id and
                                           len(tokens) > input_ids.shape[1]):
            guesses = []
            pending = tokens[draft.seq_len:]
            for _ in range(min(draft_tokens, limit - len(tokens))):
                ids = torch.tensor([pending], device=input_ids.device)
                logits = self(ids, draft_steps, past_key_values=draft, use_cache=True).logits
                guesses.append(int(logits[0, -1].argmax()))
                pending = guesses[-1:]
            ids = torch.tensor([tokens[-1:] + guesses], device=input_ids.device)
            checks = self(ids, num_steps, past_key_values=verify,
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


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting labels[:, t + 1] from logits[:, t]; -100 is ignored."""
    # Shift the labels, not the logits: slicing the logits would copy them and give their
    # gradient a full-size zero fill in backward.
    targets = F.pad(labels[:, 1:].long(), (0, 1), value=-100)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


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
