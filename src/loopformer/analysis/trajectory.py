"""What one token's latent state does over the thinking steps, as a rule.

Huginn (Geiping et al. 2025, §7) describes three pictures in the PCA of per-step states: tokens
that settle on a **fixed point**, tokens that enter an **orbit** (the state comes back to where
it was every p steps), and **sliders** that drift steadily in one direction (a latent counter).
`classify_trajectory` makes those pictures a rule on a (steps, d) tensor, judged on the tail
of the trajectory (the second half by default) so that the transient does not count:

1. fixed_point: the median relative step |s_t - s_{t-1}| / |s_t| over the last quarter of
   the steps is below `fixed_tol`;
2. orbit: for some period p >= 2, |s_t - s_{t-p}| over the tail is (median) at most
   `orbit_tol` times the typical step |s_t - s_{t-1}|: the state returns while it moves;
3. slider: the tail's steps point one way, |sum of steps| / sum of |steps| >= `drift_min`,
   and keep their size (the median step of the tail's last third is within a factor 2 of its
   first third's), so a slowing approach to a fixed point is not a slider;
4. other: none of these (a random walk, chaos, a transient still under way).

Every test is a ratio of distances, so the label does not depend on the scale or the width
of the state. A slider slower than `fixed_tol` per step reads as a fixed point at this
resolution, and an orbit whose radius is within `fixed_tol` likewise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

CLASSES = ("fixed_point", "orbit", "slider", "other")
MIN_STEPS = 8


@dataclass
class Trajectory:
    label: str
    relative_step: float  # median |s_t - s_{t-1}| / |s_t| over the last quarter
    recurrence: float  # min over p of median |s_t - s_{t-p}| / median step (tail)
    period: int | None  # the smallest p with recurrence <= orbit_tol, if any
    drift: float  # |sum of tail steps| / sum of |tail steps| (1: a straight line)
    steadiness: float  # median step of the tail's last third / its first third

    def to_dict(self) -> dict:
        return asdict(self)


def describe_trajectory(states: torch.Tensor, *, tail: float = 0.5, fixed_tol: float = 1e-2,
                        orbit_tol: float = 0.25, drift_min: float = 0.8) -> Trajectory:
    """The numbers behind the label, and the label (see the module's docstring)."""
    if states.dim() != 2 or states.shape[0] < MIN_STEPS:
        raise ValueError(f"a trajectory is a (steps, d) tensor with at least {MIN_STEPS} "
                         f"steps, got shape {tuple(states.shape)}: run more thinking steps")
    if not 0 < tail <= 1:
        raise ValueError(f"tail must lie in (0, 1], got {tail}")
    s = states.detach().double()
    if not torch.isfinite(s).all():
        return Trajectory("other", float("nan"), float("nan"), None, float("nan"),
                          float("nan"))
    steps = s.shape[0]
    first = min(steps - 4, int(steps * (1 - tail)))  # the tail keeps >= 4 states
    tiny = torch.finfo(s.dtype).tiny
    moves = (s[1:] - s[:-1]).norm(dim=-1)  # moves[i] = |s_{i+1} - s_i|
    relative = moves / s[1:].norm(dim=-1).clamp_min(tiny)
    last_quarter = relative[-max(2, (steps - 1) // 4):]
    relative_step = float(last_quarter.median())

    tail_moves = moves[first:]
    typical = float(tail_moves.median()) + tiny
    recurrences = {}
    for p in range(2, (steps - first) // 2 + 1):
        gaps = (s[first + p:] - s[first:-p]).norm(dim=-1) if first + p < steps else None
        if gaps is not None and gaps.numel() >= 2:
            recurrences[p] = float(gaps.median()) / typical
    recurrence = min(recurrences.values(), default=float("inf"))
    period = next((p for p, r in recurrences.items() if r <= orbit_tol), None)

    deltas = s[first + 1:] - s[first:-1]
    drift = float(deltas.sum(0).norm() / deltas.norm(dim=-1).sum().clamp_min(tiny))
    third = max(1, len(tail_moves) // 3)
    steadiness = float(tail_moves[-third:].median() / tail_moves[:third].median().clamp_min(tiny))

    if relative_step < fixed_tol:
        label = "fixed_point"
    elif period is not None:
        label = "orbit"
    elif drift >= drift_min and 0.5 <= steadiness <= 2.0:
        label = "slider"
    else:
        label = "other"
    return Trajectory(label, relative_step, recurrence, period, drift, steadiness)


def classify_trajectory(states: torch.Tensor, **tolerances) -> str:
    """"fixed_point", "orbit", "slider" or "other" for one token's states, a (steps, d)
    tensor (steps >= 8); tolerances: tail, fixed_tol, orbit_tol, drift_min."""
    return describe_trajectory(states, **tolerances).label
