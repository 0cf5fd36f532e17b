"""LoopLM: the language-model interface around the recurrent-depth backbone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_model
from torch import nn

from ..config import ModelConfig
from .backbone import Backbone
from .cache import KVCache, cache_slots
from .context import AttentionContext
from .depth import Depth
from .exits import DEFAULT_EXIT_ENTROPY, ExitRule
from .lora import is_adapter
from .observers import CoreOutput, StepObserver
from .static_decoding import DecodeState
from .weights import count_parameters, init_weights


MODEL_TYPE = "loopformer"  # config.json's model_type, as in Hugging Face folders


@dataclass
class LoopLMOutput:
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor | None = None
    past_key_values: KVCache | None = None
    steps: torch.Tensor | None = None  # (B, T): core steps each token used
    state: torch.Tensor | None = None  # (B, T, d): the final core state of each token
    ponder: torch.Tensor | None = None  # (B, T): ACT's ponder cost N + R, if halting="act"
    aux_loss: torch.Tensor | None = None  # MoE balancing loss in training ("aux-loss")


class NextTokenLoss(nn.Module):
    """Mean cross-entropy of predicting labels[:, t + 1] from logits[:, t]; -100 is ignored.
    A module without parameters, so that compile_regions can compile it (the log-softmax and
    its gradient then fuse into one pass over the logits)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Shift the labels, not the logits: slicing the logits would copy them and give their
        # gradient a full-size zero fill in backward.
        targets = F.pad(labels[:, 1:].long(), (0, 1), value=-100)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                               ignore_index=-100)


class LoopLM(nn.Module):
    """Token embedding -> prelude -> core looped num_steps times -> coda -> tied LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = Backbone(cfg)
        self.loss = NextTokenLoss()
        init_weights(self, cfg.init_std)

    def compile_regions(self, **options) -> None:
        """torch.compile the repeated regions and cached decoding (loopformer.compile)."""
        from ..compile import compile_regions  # compilation wraps the model from above

        compile_regions(self, **options)

    @property
    def core(self):
        return self.backbone.core

    def save_pretrained(self, directory: str | Path) -> None:
        """Write DIR/config.json (the ModelConfig) and DIR/model.safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(
            {"model_type": MODEL_TYPE, **self.cfg.to_dict()}, indent=2) + "\n")
        save_model(self, str(directory / "model.safetensors"))  # stores tied weights once

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        **overrides) -> "LoopLM":
        """A model written by save_pretrained, or by LoopForCausalLM.save_pretrained
        (loopformer.hf), in eval mode. Weights load from safetensors only. `overrides` change
        config fields; adding `step_lora_rank=r` to a model saved without adapters gives it
        fresh (zero) adapters, to fine-tune on top of the tied weights."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file() or not (directory / "model.safetensors").is_file():
            raise ValueError(f"{directory} is not a saved LoopLM: it needs config.json and "
                             "model.safetensors (LoopLM.save_pretrained writes both)")
        data = json.loads(config_path.read_text())
        if data.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{config_path} describes another model type; expected "
                             f"model_type {MODEL_TYPE!r}")
        if "architectures" in data:  # written by transformers (loopformer.hf): keep ours
            data = {k: v for k, v in data.items() if k in ModelConfig.__dataclass_fields__}
        model = cls(ModelConfig.from_dict({**data, **overrides}))
        weights = load_file(directory / "model.safetensors", device=str(device))
        if all(k.startswith("model.") for k in weights):  # LoopForCausalLM holds us as .model
            weights = {k.removeprefix("model."): v for k, v in weights.items()}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not is_adapter(k)]  # new adapters start at zero
        if missing or unexpected:
            raise ValueError(f"{directory / 'model.safetensors'} does not fit its config: "
                             f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        return model.to(device).eval()

    def num_parameters(self, active: bool = False) -> int:
        """All parameters, or with `active` those one token uses (MoE: k of n experts)."""
        return count_parameters(self, active)

    def spectral_radius(self) -> float | None:
        """rho of the state-to-state linear map for injection='lti', else None."""
        return self.core.spectral_radius()

    def check_input_ids(self, input_ids: torch.Tensor, past: int = 0) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int16,
                                                           torch.uint8):
            raise ValueError("input_ids must be an integer tensor of shape (batch, seq_len), got "
                             f"{input_ids.dtype} {tuple(input_ids.shape)}")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids of shape {tuple(input_ids.shape)} is empty: pass at "
                             "least one sequence of at least one token")
        # Meta tensors (FLOP counts of models too large to build) carry no ids to check.
        low, high = (0, 0) if input_ids.is_meta else (int(input_ids.min()), int(input_ids.max()))
        if low < 0 or high >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}) "
                             f"(ModelConfig.vocab_size), got ids in [{low}, {high}]")
        if past + input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence of {past + input_ids.shape[1]} tokens ({past} cached + "
                f"{input_ids.shape[1]} new) exceeds max_seq_len={self.cfg.max_seq_len}; "
                "truncate the input or build the model with a larger ModelConfig.max_seq_len")

    def check_labels(self, labels: torch.Tensor, input_ids: torch.Tensor) -> None:
        if labels.shape != input_ids.shape or labels.is_floating_point():
            raise ValueError(f"labels must be integer ids shaped like input_ids "
                             f"{tuple(input_ids.shape)}, got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        real = labels[labels != -100]  # -100: ignored positions (padding)
        if not labels.is_meta and real.numel() and (int(real.min()) < 0 or
                                                    int(real.max()) >= self.cfg.vocab_size):
            raise ValueError(f"labels must lie in [0, {self.cfg.vocab_size}) or be -100 "
                             f"(ignored), got values in [{int(real.min())}, {int(real.max())}]")

    def forward(self, input_ids: torch.Tensor, num_steps=None, *,
                attention_mask: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                exit_criterion: str | None = None, exit_threshold: float | None = None,
                min_steps: int = 1, exit_entropy: float = DEFAULT_EXIT_ENTROPY,
                initial_state: torch.Tensor | None = None,
                observers: Sequence[StepObserver] = ()) -> LoopLMOutput:
        """Logits for input_ids after num_steps core steps: an int, or (n_nograd, n_grad) for
        truncated backprop (see Depth, RecurrentCore.unroll).

        exit_criterion: per-token early exit (see loopformer.model.exits); num_steps is then
        the maximum and out.steps says what each token used. A new cache for adaptive depth
        uses the "latest" fallback, so a token that stopped early can be attended at any depth.
        observers: more StepObservers to see every core step (loopformer.model.observers).
        """
        depth = Depth.of(self.cfg.mean_steps if num_steps is None else num_steps)
        exit_rule = None if exit_criterion is None else ExitRule(
            exit_criterion, exit_threshold, min_steps, exit_entropy)
        cache = past_key_values
        if use_cache and cache is None:
            cache = KVCache(mode="exact" if exit_rule is None else "latest")
        if cache is not None and not self.cfg.causal:
            raise ValueError("a KV cache needs a causal model (ModelConfig.causal=True)")
        self.check_input_ids(input_ids, cache.seq_len if cache is not None else 0)
        B, T = input_ids.shape
        if cache is not None and cache.seq_len and cache.key_mask.shape[0] != B:
            raise ValueError(f"past_key_values holds {cache.key_mask.shape[0]} sequences but "
                             f"input_ids has {B}: use a new KVCache for another batch")
        if initial_state is not None and initial_state.shape != (B, T, self.cfg.d_model):
            raise ValueError(f"initial_state must have shape (batch, seq_len, d_model) = "
                             f"{(B, T, self.cfg.d_model)}, got {tuple(initial_state.shape)}")
        if labels is not None:
            self.check_labels(labels, input_ids)

        writer = None
        if cache is not None:
            whole = not observers and depth.rows is None and \
                self._runs_every_step(cache, exit_rule)
            writer = cache.writer(T, cache_slots(self.cfg, depth) if whole else None)
        ctx = self.backbone.context(B, T, input_ids.device, attention_mask, writer=writer)
        if writer is not None and writer.reserved:
            logits, state = self.forward_cached(input_ids, ctx, depth, initial_state)
            core_out = CoreOutput(state, depth.total, torch.full_like(
                ctx.token_mask, depth.total, dtype=torch.long))
        else:
            observers = list(observers)
            if exit_rule is not None:
                # The coda attends over every token of the row; the head reads the running
                # tokens only (running None: all of them).
                probe = lambda state, rows, running: self.head(_select(self.backbone.decode(
                    state, ctx if rows is None else ctx.select_rows(rows)), running))
                observers.append(exit_rule.observer(self.cfg, ctx.token_mask, probe,
                                                    per_token=True))
            features, core_out = self.backbone(self.embed(input_ids.long()), ctx, depth,
                                               observers=observers, generator=generator,
                                               initial_state=initial_state)
            logits = self.head(features[-1])
        if cache is not None:
            cache.commit(writer, ctx.token_mask, ctx.positions)
        loss = None if labels is None else self.loss(logits, labels)
        return LoopLMOutput(logits=logits, loss=loss,
                            past_key_values=cache if use_cache else None,
                            steps=core_out.token_steps, state=core_out.state,
                            ponder=core_out.ponder, aux_loss=core_out.aux_loss)

    def _runs_every_step(self, cache: KVCache, exit_rule: ExitRule | None) -> bool:
        """Whether a cached call writes every slot of its depth, so that the writer can
        prepare them all up front and forward_cached runs: in inference, with past tokens,
        without data-dependent stops (exits, learned halting) or random draws (noise init)."""
        return (cache.seq_len > 0 and exit_rule is None and not torch.is_grad_enabled()
                and not cache.keep_first  # its writer snapshots step 0 between steps
                and self.cfg.core == "recurrent" and self.cfg.halting == "none"
                and self.cfg.state_init != "noise")

    def forward_cached(self, input_ids: torch.Tensor, ctx: AttentionContext, depth: Depth,
                       initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A cached call whose slots the writer prepared: only tensor work, so
        compile_regions compiles it whole (one graph per depth, symbolic positions)."""
        features, core_out = self.backbone(self.embed(input_ids.long()), ctx, depth,
                                           initial_state=initial_state)
        return self.head(features[-1]), core_out.state

    def decode_token(self, tokens: torch.Tensor, state: DecodeState, steps: int,
                     initial_state: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, vocab) and final state (B, 1, d) of one new token per row (B, 1) after
        the cache that `state` holds at fixed shapes (loopformer.model.static_decoding): only
        tensor work, so compile_regions compiles it whole, every thinking step in one graph."""
        ctx = state.context(self.backbone.rope)
        features, core_out = self.backbone(self.embed(tokens.long()), ctx, Depth(0, steps),
                                           initial_state=initial_state)
        state.advance()
        return self.head(features[-1][:, -1]), core_out.state

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.embed.weight)  # tied to the input embedding

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 16, num_steps=None,
                 **options) -> torch.Tensor:
        """Autoregressive decoding with the KV cache (loopformer.generation.generate)."""
        from ..generation import generate  # decoding drives the model from above

        return generate(self, input_ids, max_new_tokens, num_steps, **options)

    def generate_speculative(self, input_ids: torch.Tensor, max_new_tokens: int = 16,
                             num_steps: int | None = None, draft_steps: int = 2,
                             draft_tokens: int = 4,
                             eos_token_id: int | None = None) -> tuple[torch.Tensor, dict]:
        """Self-speculative greedy decoding (loopformer.generation.generate_speculative)."""
        from ..generation import generate_speculative

        return generate_speculative(self, input_ids, max_new_tokens, num_steps, draft_steps,
                                    draft_tokens, eos_token_id)


def _select(features: torch.Tensor, running: torch.Tensor | None) -> torch.Tensor:
    return features if running is None else features[running]
