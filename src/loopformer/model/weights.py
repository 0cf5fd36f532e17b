"""Weight initialisation shared by every model built on the backbone."""

from __future__ import annotations

from torch import nn

from .moe import MoE


def init_weights(root: nn.Module, std: float) -> None:
    """Normal(0, std) for every linear and embedding weight; then every other module that
    defines `reset_parameters()` (a special start: the gated update's identity bias, the
    halting unit) resets its own parameters on top."""
    for m in root.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
    for m in root.modules():
        if not isinstance(m, (nn.Linear, nn.Embedding)) and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def count_parameters(root: nn.Module, active: bool = False) -> int:
    """Parameters of `root`; with `active`, those one token uses: a MoE layer's routed
    experts count k / n_experts of theirs (DeepSeekMoE's "activated parameters")."""
    total = sum(p.numel() for p in root.parameters())
    if active:
        for m in root.modules():
            if isinstance(m, MoE):
                total -= (m.gate_up.numel() + m.down.numel()) * (m.n_experts - m.k) // m.n_experts
    return total
