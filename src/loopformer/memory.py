"""Counting the memory a training step keeps for its backward pass."""

from __future__ import annotations

from typing import Callable

import torch


def saved_tensor_bytes(step: Callable[[], object]) -> int:
    """Run `step` (a forward + backward) and return the bytes autograd saved for backward:
    the activation memory of training, independent of allocator noise."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total
