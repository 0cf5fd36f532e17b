"""Task interfaces: an encoder and a readout around the shared, task-invariant backbone.

Every interface is encoder -> backbone -> readout: `embed_inputs` maps a batch to embeddings
and an attention context, the backbone runs prelude, core and coda, and `readout` maps coda
features to one logits tensor per requested step: the final step by default, or every
gradient step (`all_steps=True`) for per-step supervision and for evaluating many depths in
one pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..model.backbone import Backbone
from ..model.context import AttentionContext
from ..model.depth import Depth
from ..model.exits import ExitRule
from ..model.lm import LoopLM
from ..model.observers import StepObserver
from ..model.weights import count_parameters, init_weights
from .base import Task


@dataclass
class TaskOutput:
    logits: list[torch.Tensor]  # (B, classes) per requested step (one: the final step)
    steps: torch.Tensor  # (B,) core steps spent on each example (its slowest real token)
    ponder: torch.Tensor | None = None  # (B,) ACT's mean N + R over the example's tokens
    aux_loss: torch.Tensor | None = None  # MoE balancing loss, for the trainer to add
    # (B, T, classes) at the final step, when the batch holds "position_labels"
    position_logits: torch.Tensor | None = None


class TaskModel(nn.Module, ABC):
    backbone: Backbone

    @abstractmethod
    def embed_inputs(self, batch: dict) -> tuple[torch.Tensor, AttentionContext]:
        """Batch -> embeddings (B, T, d) and the attention context."""

    @abstractmethod
    def readout(self, features: torch.Tensor, batch: dict) -> torch.Tensor:
        """Coda features (B, T, d) -> logits (B, classes)."""

    def position_readout(self, features: torch.Tensor) -> torch.Tensor:
        """Coda features (B, T, d) -> logits (B, T, classes) at every position: what a batch's
        optional "position_labels" (per-position targets) are trained against."""
        raise ValueError(f"{type(self).__name__} has no per-position readout: a batch with "
                         "\"position_labels\" needs the \"lm\" interface, or a classifier "
                         "task with num_position_classes > 0")

    def forward(self, batch: dict, num_steps, *, all_steps: bool = False,
                generator: torch.Generator | None = None, exit_rule: ExitRule | None = None,
                observers: Sequence[StepObserver] = ()) -> TaskOutput:
        """all_steps: read out every gradient step (per-step loss, many depths in one pass).
        exit_rule: stop early; logit criteria judge the example's readout, so all its tokens
        stop together, while latent criteria judge each token's own state. observers: more
        StepObservers to see every core step."""
        x, ctx = self.embed_inputs(batch)
        observers = list(observers)
        if exit_rule is not None:
            probe = lambda state, rows, running: self.readout(*_rows_of(
                self.backbone.decode, state, ctx, batch, rows))
            observers.append(exit_rule.observer(self.backbone.cfg, ctx.token_mask, probe))
        features, core_out = self.backbone(x, ctx, Depth.of(num_steps), all_steps=all_steps,
                                           observers=observers, generator=generator)
        real = ctx.token_mask
        steps = (core_out.token_steps * real).max(dim=1).values
        ponder = None
        if core_out.ponder is not None:
            ponder = (core_out.ponder * real).sum(1) / real.sum(1).clamp_min(1)
        position_logits = None
        if "position_labels" in batch:
            position_logits = self.position_readout(features[-1])
        return TaskOutput([self.readout(f, batch) for f in features], steps, ponder,
                          core_out.aux_loss, position_logits)

    def num_parameters(self, active: bool = False) -> int:
        """All parameters, or with `active` those one token uses (MoE: k of n experts)."""
        return count_parameters(self, active)


def _rows_of(decode, state: torch.Tensor, ctx: AttentionContext, batch: dict,
             rows: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """Coda features of the batch rows `rows` (None: all) and those rows of the batch."""
    if rows is None:
        return decode(state, ctx), batch
    return decode(state, ctx.select_rows(rows)), batch_rows(batch, rows, ctx.token_mask.shape[0])


def batch_rows(batch: dict, rows: torch.Tensor, size: int) -> dict:
    """These rows of every per-example tensor of `batch` (of `size` examples)."""
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == size
            else v for k, v in batch.items()}


class GraphReasoner(TaskModel):
    """Node letter embeddings + source/target role vectors; a node attends to its
    in-neighbours and itself; readout from concat(s[source], s[target])."""

    def __init__(self, cfg: ModelConfig, num_letters: int):
        super().__init__()
        self.node_embed = nn.Embedding(num_letters, cfg.d_model)
        self.role_embed = nn.Embedding(3, cfg.d_model)  # 0 other, 1 source, 2 target
        self.backbone = Backbone(cfg)
        self.head = nn.Sequential(nn.Linear(2 * cfg.d_model, cfg.d_model), nn.GELU(),
                                  nn.Linear(cfg.d_model, 2))
        init_weights(self, cfg.init_std)

    def embed_inputs(self, batch):
        node_ids = batch["node_ids"]
        B, N = node_ids.shape
        rows = torch.arange(B, device=node_ids.device)
        roles = torch.zeros_like(node_ids)
        roles[rows, batch["source"]] = 1
        roles[rows, batch["target"]] = 2
        ctx = self.backbone.context(B, N, node_ids.device, batch["node_mask"],
                                    structure_mask=batch["adjacency"])
        return self.node_embed(node_ids) + self.role_embed(roles), ctx

    def readout(self, features, batch):
        rows = torch.arange(features.shape[0], device=features.device)
        pair = torch.cat((features[rows, batch["source"]], features[rows, batch["target"]]), -1)
        return self.head(pair)


class SequenceClassifier(TaskModel):
    """Token embeddings with a CLS token first; bidirectional attention; readout from CLS."""

    def __init__(self, cfg: ModelConfig, num_classes: int, num_position_classes: int = 0):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = Backbone(cfg)
        self.head = nn.Linear(cfg.d_model, num_classes)
        if num_position_classes:  # a head for per-position targets (Task.num_position_classes)
            self.position_head = nn.Linear(cfg.d_model, num_position_classes)
        init_weights(self, cfg.init_std)

    def embed_inputs(self, batch):
        ids = batch["input_ids"]
        ctx = self.backbone.context(*ids.shape, ids.device, batch["attention_mask"])
        return self.embed(ids), ctx

    def readout(self, features, batch):
        return self.head(features[:, 0])

    def position_readout(self, features):
        if not hasattr(self, "position_head"):
            return super().position_readout(features)
        return self.position_head(features)


class AnswerLM(TaskModel):
    """A LoopLM whose last position predicts the answer token (inputs are left-padded)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.lm = LoopLM(cfg)
        self.backbone = self.lm.backbone

    def embed_inputs(self, batch):
        ids = batch["input_ids"]
        self.lm.check_input_ids(ids)
        ctx = self.backbone.context(*ids.shape, ids.device, batch.get("attention_mask"))
        return self.lm.embed(ids), ctx

    def readout(self, features, batch):
        return self.lm.head(features[:, -1])

    def position_readout(self, features):
        return self.lm.head(features)


class TextLM(AnswerLM):
    """A LoopLM trained on text: every position predicts the next token."""

    def readout(self, features, batch):
        return self.lm.head(features)  # (B, T, vocab)


def build_task_model(task: Task, cfg: ModelConfig) -> TaskModel:
    """The interface a task asks for, around a backbone built from `cfg`."""
    if task.interface != "graph" and cfg.vocab_size < task.vocab_size:
        raise ValueError(f"the model's vocabulary ({cfg.vocab_size}) is smaller than task "
                         f"{task.name!r}'s ({task.vocab_size} tokens): set --model.vocab-size "
                         f"{task.vocab_size}")
    if task.interface == "graph":
        return GraphReasoner(cfg, task.vocab_size)
    if task.interface == "classifier":
        return SequenceClassifier(cfg, task.num_classes, task.num_position_classes)
    if task.interface == "lm":
        return AnswerLM(cfg)
    raise ValueError(f"task {task.name!r} asks for unknown interface {task.interface!r}")
