"""RMSNorm (Zhang & Sennrich 2019), computed in at least fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in (at least) fp32, so bf16 activations do not lose the mean-square.
        compute = torch.promote_types(x.dtype, torch.float32)
        return F.rms_norm(x.to(compute), self.weight.shape, self.weight.to(compute),
                          self.eps).to(x.dtype)
