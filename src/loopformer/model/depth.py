"""Depth: how many thinking steps (core steps) one call runs, and through how many of them
gradients flow. Built once at the public boundary from an int or a pair; everything inside
receives a Depth."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Depth:
    """`no_grad` steps without autograd, then `grad` steps with it (truncated backprop,
    Huginn): activation memory depends only on `grad`."""

    no_grad: int
    grad: int
    rows: torch.Tensor | None = field(default=None, compare=False)
    """(B,) steps of each batch row, when rows differ (the loop runs the most; a row that has
    run its own count keeps its state); None: every row runs `total`."""

    def __post_init__(self) -> None:
        if not (_is_int(self.no_grad) and _is_int(self.grad)):
            raise ValueError(f"num_steps must be ints, got ({self.no_grad!r}, {self.grad!r})")
        if self.no_grad < 0 or self.grad < 1:
            raise ValueError("num_steps=(n_nograd, n_grad) needs n_nograd >= 0 and n_grad >= 1, "
                             f"got ({self.no_grad}, {self.grad})")

    @property
    def total(self) -> int:
        return self.no_grad + self.grad

    @classmethod
    def of(cls, num_steps: "int | tuple[int, int] | torch.Tensor | Depth") -> "Depth":
        """An int T (all T steps with grad), a pair (n_nograd, n_grad), a (B,) integer tensor
        of steps per batch row (all with grad), or a Depth."""
        if isinstance(num_steps, Depth):
            return num_steps
        if isinstance(num_steps, torch.Tensor):
            if num_steps.dim() == 0:
                return cls.of(int(num_steps))
            if num_steps.dim() != 1 or num_steps.dtype.is_floating_point or \
                    num_steps.dtype == torch.bool or num_steps.numel() == 0:
                raise ValueError("num_steps as a tensor must be (B,) integers, one count per "
                                 f"batch row; got {tuple(num_steps.shape)} {num_steps.dtype}")
            low, high = int(num_steps.min()), int(num_steps.max())
            if low < 1:
                raise ValueError(f"num_steps must be >= 1 in every row, got {low}")
            return cls(0, high, num_steps.long())
        if _is_int(num_steps):
            if num_steps < 1:
                raise ValueError(f"num_steps must be >= 1, got {num_steps}")
            return cls(0, num_steps)
        if (isinstance(num_steps, (tuple, list)) and len(num_steps) == 2
                and all(_is_int(n) for n in num_steps)):
            return cls(*num_steps)
        raise ValueError("num_steps must be an int >= 1 or a pair (n_nograd, n_grad) of ints, "
                         f"got {num_steps!r}")
