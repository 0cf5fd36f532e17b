"""LoopLM: the language-model interface around the recurrent-depth backbone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .cache import KVCache
from .config import ModelConfig
from .core import GatedInjection


@dataclass
class LoopLMOutput:
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor | None = None
    past_key_values: KVCache | None = None
    steps: torch.Tensor | None = None  # (B, T): core steps each token used


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for every linear and embedding weight; biases keep their own init."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, GatedInjection):
            m.reset_gate()


class LoopLM(nn.Module):
    """Token embedding -> prelude -> core looped num_steps times -> coda -> tied LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = Backbone(cfg)
        init_weights(self, cfg.init_std)

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
                generator: torch.Generator | None = None) -> LoopLMOutput:
        num_steps = self.cfg.mean_steps if num_steps is None else num_steps
        cache = past_key_values
        if use_cache and cache is None:
            cache = KVCache()
        if cache is not None and not self.cfg.causal:
            raise ValueError("a KV cache needs a causal model (ModelConfig.causal=True)")
        self.check_input_ids(input_ids, cache.seq_len if cache is not None else 0)

        B, T = input_ids.shape
        ctx = self.backbone.context(B, T, input_ids.device, attention_mask, cache=cache)
        features, core_out = self.backbone(self.embed(input_ids.long()), ctx, num_steps,
                                    generator=generator)
        logits = F.linear(features, self.embed.weight)  # tied head
        if cache is not None:
            cache.commit(ctx.token_mask, ctx.positions)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                   labels[:, 1:].flatten().long(), ignore_index=-100)
        steps = torch.full((B, T), core_out.steps, dtype=torch.long, device=input_ids.device)
        return LoopLMOutput(logits=logits, loss=loss,
                            past_key_values=cache if use_cache else None, steps=steps)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 16, num_steps=None, *,
                 attention_mask: torch.Tensor | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Autoregressive decoding with the KV cache; returns prompt + new tokens (B, T + n).

        A sequence that has produced `eos_token_id` is continued with `pad_token_id` (default:
        the eos id), and decoding stops once every sequence has finished.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")
        self.check_input_ids(input_ids)
        total = input_ids.shape[1] + max_new_tokens
        if total > self.cfg.max_seq_len:
            raise ValueError(f"prompt of {input_ids.shape[1]} tokens + max_new_tokens="
                             f"{max_new_tokens} exceeds max_seq_len={self.cfg.max_seq_len}")
        pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
        tokens = input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        out = self(input_ids, num_steps, attention_mask=attention_mask, use_cache=True,
                   generator=generator)
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
                           use_cache=True, generator=generator)
        return tokens


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
