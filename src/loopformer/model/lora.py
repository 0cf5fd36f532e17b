"""Per-step LoRA adapters on the shared block (Relaxed Recursive Transformers, Bae et al. 2025).

Every linear layer of a block is a `Linear`, which accepts the core step it runs at (and
ignores it). `add_step_adapters` turns the core's layers into `StepLoRALinear`s:
W x + B_t A_t x, one (A_t, B_t) of rank r per thinking step t. B starts at zero, so the adapted
model starts equal to the tied one; the step index is clamped, so steps beyond the table
(`max_step_embeddings`) reuse the last adapter, as the learned step embedding does. The
adapters only add parameters (`...lora_a`, `...lora_b`): the weight keeps its name, so a
checkpoint of the tied model loads into the adapted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_PARAMETERS = ("lora_a", "lora_b")


class Linear(nn.Linear):
    """A bias-free nn.Linear whose forward takes the core step (None outside the core)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight)

    def weight_at(self, step: torch.Tensor | None = None) -> torch.Tensor:
        """The (out, in) matrix this layer applies at `step`."""
        return self.weight


class StepLoRALinear(Linear):
    """W x + B_t (A_t x), t = the step's row of the adapter table (a 0-d long tensor, so a
    compiled step serves every t)."""

    def __init__(self, d_in: int, d_out: int, rank: int, steps: int):
        super().__init__(d_in, d_out)
        self.lora_a = nn.Parameter(torch.empty(steps, rank, d_in))
        self.lora_b = nn.Parameter(torch.zeros(steps, d_out, rank))
        self.reset_adapters()

    def reset_adapters(self) -> None:
        # A as a linear layer's default init, B zero: the product starts at exactly zero.
        nn.init.normal_(self.lora_a, std=1 / math.sqrt(self.in_features))
        nn.init.zeros_(self.lora_b)

    def forward(self, x: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if step is None:
            return y
        return y + F.linear(F.linear(x, self.lora_a[step]), self.lora_b[step])

    def weight_at(self, step: torch.Tensor | None = None) -> torch.Tensor:
        if step is None:
            return self.weight
        return self.weight + self.lora_b[step] @ self.lora_a[step]


def add_step_adapters(module: nn.Module, rank: int, steps: int) -> None:
    """Replace every `Linear` inside `module` by a StepLoRALinear keeping its weight."""
    for name, child in list(module.named_children()):
        if type(child) is Linear:
            adapted = StepLoRALinear(child.in_features, child.out_features, rank, steps)
            adapted.weight = child.weight
            setattr(module, name, adapted)
        else:
            add_step_adapters(child, rank, steps)


def is_adapter(name: str) -> bool:
    """Whether a state-dict key names a per-step adapter (absent from a tied checkpoint)."""
    return name.rsplit(".", 1)[-1] in ADAPTER_PARAMETERS
