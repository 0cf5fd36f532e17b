"""Per-update depth samplers. Each draw depends only on (seed, update), so every data-parallel
rank draws the same depth without communicating (Huginn seeds its sampler by the update)."""

from __future__ import annotations

import math

import numpy as np

DEPTH_SAMPLERS = ("fixed", "uniform", "poisson-lognormal", "poisson")


def sample_depth(kind: str, update: int, seed: int, *, low: int, high: int, mean: float) -> int:
    """The number of core steps for optimiser update `update`.

    fixed: `mean`; uniform: U{low..high} (Chen 2026); poisson-lognormal: rate ~ LogNormal(
    log(mean) - s^2/2, s=0.5), r = Poisson(rate) + 1 (Huginn, mean ~ mean + 1, clipped to
    [low, high]); poisson: Poisson(mean) clipped to [low, high] (Loop-Think-Generalize: mean
    4, [2, 8]).
    """
    rng = np.random.default_rng([seed, update, 0x5EED])
    if kind == "fixed":
        return int(round(mean))
    if kind == "uniform":
        return int(rng.integers(low, high + 1))
    if kind == "poisson-lognormal":
        sigma = 0.5
        rate = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma)
        return int(np.clip(rng.poisson(rate) + 1, low, high))
    if kind == "poisson":
        return int(np.clip(rng.poisson(mean), low, high))
    raise ValueError(f"unknown depth sampler {kind!r}; choose one of {DEPTH_SAMPLERS}")


def sample_extra_steps(count: int, most: int, update: int, seed: int) -> np.ndarray:
    """U{0..most} extra steps for each of `count` examples of update `update` (depth "task"
    with TrainConfig.depth_extra), drawn from (seed, update) alone like the samplers above."""
    return np.random.default_rng([seed, update, 0xE7A]).integers(0, most + 1, count)
