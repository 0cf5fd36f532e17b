"""Mixture-of-experts feed-forward: routed + shared experts (DeepSeekMoE 2024, DeepSeek-V3 2024).

Each token goes to `experts_per_token` of `n_experts` small SwiGLUs, chosen by a router computed
in fp32, and through the shared experts (one SwiGLU of n_shared x expert width: a sum of
SwiGLUs is a wider SwiGLU). No token is dropped, so a token's output never depends on the
others in its batch and cached decoding stays exact. Dispatch is batched: the (token, expert)
pairs are sorted by expert and each projection is one grouped matmul over them.

Balancing (`moe_balance`):
- "aux-free" (DeepSeek-V3): gates g = sigmoid(router logits); the top-k is chosen on g + b,
  where the bias b is used for selection only; gates are g over the chosen k, normalised. After
  every optimiser update `update_balance` moves b_i <- b_i - gamma * sign(load_i - mean load).
- "aux-loss" (Switch Transformer, Fedus et al. 2021): gates = softmax probabilities p over the
  chosen k, normalised; the loss alpha * N * sum_i f_i * P_i (f_i: share of assignments to
  expert i, P_i: mean probability of i) is recorded in the context and added by the trainer.

Per-expert load (routed real tokens) accumulates in `load` in training mode, one row per
thinking step (the core may route a token differently at each step, MoEUT), for the trainer to
log and to balance with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .context import AttentionContext
from .mlp import SwiGLU


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.k, self.balance = cfg.n_experts, cfg.experts_per_token, \
            cfg.moe_balance
        self.aux_weight, self.bias_rate = cfg.moe_aux_weight, cfg.moe_bias_rate
        self.init_std = cfg.init_std
        width = cfg.expert_width
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(cfg.n_experts, 2 * width, cfg.d_model))
        self.down = nn.Parameter(torch.empty(cfg.n_experts, cfg.d_model, width))
        self.shared = SwiGLU(cfg, cfg.n_shared_experts * width) if cfg.n_shared_experts \
            else None
        # Selection bias (aux-free): saved with the weights, moved only by update_balance.
        self.register_buffer("bias", torch.zeros(cfg.n_experts))
        # Real tokens routed to each expert since the last update_balance, per step row.
        self.register_buffer("load", torch.zeros(cfg.max_step_embeddings, cfg.n_experts),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gate_up, std=self.init_std)
        nn.init.normal_(self.down, std=self.init_std)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # The balance state stays fp32 in a bf16 model: bf16 cannot hold a 0.001 step of a
        # bias near 1, nor count past 256 tokens exactly.
        self.bias, self.load = self.bias.float(), self.load.float()
        return self

    def reset_buffers(self) -> None:
        """Clear the load counts (not saved with the weights, so a loader may leave them
        uninitialised)."""
        self.load.zero_()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, d) -> chosen experts (N, k), their gates (N, k) and the router's
        probabilities (N, E), all from fp32 logits."""
        logits = F.linear(x.float(), self.router.weight.float())
        if self.balance == "aux-free":
            affinity = logits.sigmoid()
            chosen = (affinity + self.bias).topk(self.k, dim=-1).indices
            gates = affinity.gather(-1, chosen)
        else:
            affinity = logits.softmax(-1)
            gates, chosen = affinity.topk(self.k, dim=-1)
        return chosen, gates / gates.sum(-1, keepdim=True), affinity

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        chosen, gates, affinity = self.route(x)
        # (token, expert) pairs sorted by expert: each expert's tokens are one contiguous run.
        expert_of = chosen.flatten()
        order = expert_of.argsort(stable=True)
        token_of = order // self.k
        counts = torch.bincount(expert_of, minlength=self.n_experts)
        offsets = counts.cumsum(0).to(torch.int32)
        gate, up = expert_matmul(x[token_of], self.gate_up, offsets).chunk(2, dim=-1)
        y = expert_matmul(F.silu(gate) * up, self.down, offsets)
        y = y * gates.flatten()[order, None].to(y.dtype)
        out = torch.zeros_like(x).index_add_(0, token_of, y)
        if self.shared is not None:
            out = out + self.shared(x, ctx)
        if self.training:
            self._record(chosen, affinity, ctx)
        return out.view(shape)

    def _record(self, chosen: torch.Tensor, affinity: torch.Tensor,
                ctx: AttentionContext) -> None:
        real = ctx.token_mask.reshape(-1, 1).expand_as(chosen).float()
        load = torch.zeros(self.n_experts, device=chosen.device).index_add_(
            0, chosen.flatten(), real.flatten())
        with torch.no_grad():
            row = ctx.step if ctx.step is not None else torch.zeros((), dtype=torch.long,
                                                                   device=chosen.device)
            self.load.index_add_(0, row.view(1), load[None])
        if self.balance == "aux-loss" and ctx.moe_losses is not None:
            share = load / load.sum().clamp_min(1)  # f_i
            tokens = real[:, 0]
            mean_prob = (affinity * tokens[:, None]).sum(0) / tokens.sum().clamp_min(1)  # P_i
            ctx.moe_losses.append(self.aux_weight * self.n_experts * (share * mean_prob).sum())


def grouped_mm_fits(x: torch.Tensor) -> bool:
    """Whether torch's grouped matmul takes x: its fast kernel wants bf16 on CUDA, and only the
    CPU's eager fallback takes any float dtype (its compiled form checks for bf16 too)."""
    if x.is_cuda:
        return x.dtype == torch.bfloat16
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def expert_matmul(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor,
                  grouped: bool | None = None) -> torch.Tensor:
    """Rows of x (N, in) sorted by expert, rows offsets[i-1]:offsets[i] belonging to expert
    i, times weight[i] (E, out, in) transposed: one grouped matmul where torch has one for x
    (grouped=None asks grouped_mm_fits), else one matmul per expert."""
    w = weight.to(x.dtype).transpose(1, 2)
    if grouped_mm_fits(x) if grouped is None else grouped:
        return F.grouped_mm(x, w, offs=offsets)
    sizes = torch.diff(offsets, prepend=offsets.new_zeros(1)).tolist()
    return torch.cat([part @ w[i] for i, part in enumerate(x.split(sizes))])


def moe_layers(model: nn.Module) -> list[tuple[str, MoE]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MoE)]


@torch.no_grad()
def update_balance(model: nn.Module, reduce=None) -> dict:
    """After an optimiser update: move every aux-free bias toward balance, clear the counts and
    return the load since the last call as max/mean over experts: `moe_load` over every layer
    and step, `moe_load_by_step` per thinking step of the core's layers. `reduce` returns a tensor
    summed over processes, so that every rank moves its biases alike."""
    layers = moe_layers(model)
    if not layers:
        return {}
    loads = torch.stack([m.load for _, m in layers])  # (layers, step rows, experts)
    if reduce is not None:
        loads = reduce(loads)
    for (_, m), load in zip(layers, loads):
        total = load.sum(0)
        if m.balance == "aux-free" and total.sum() > 0:
            m.bias -= m.bias_rate * torch.sign(total - total.mean())
        m.load.zero_()
    in_core = torch.tensor([".core." in f".{name}" for name, _ in layers])
    by_step = loads[in_core].sum(0)
    by_step = by_step[by_step.sum(-1) > 0]
    return {"moe_load": _max_over_mean(loads.sum((0, 1))),
            "moe_load_by_step": [_max_over_mean(row) for row in by_step]}


def _max_over_mean(load: torch.Tensor) -> float:
    return round(float(load.max() / load.mean().clamp_min(1e-9)), 3)
