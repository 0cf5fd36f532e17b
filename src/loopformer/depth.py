"""Per-batch depth samplers. Each draw depends only on (seed, step), so every data-parallel rank
draws the same depth without communicating (Huginn seeds its sampler by step)."""

from __future__ import annotations

import math

import numpy as np

DEPTH_SAMPLERS = ("fixed", "uniform", "poisson-lognormal", "poisson")


def sample_depth(kind: str, step: int, seed: int, *, low: int, high: int, mean: float) -> int:
    """The number of core steps for training step `step`.

    fixed: `mean`; uniform: U{low..high} (Chen 2026); poisson-lognormal: rate ~ LogNormal(
    log(mean) - s^2/2, s=0.5), r = Poisson(rate) + 1 (Huginn, mean ~ mean + 1, clipped to
    [low, high]); poisson: Poisson(mean) clipped to [low, high] (Loop-Think-Generalize: mean
    4, [2, 8]).
    """
    rng = np.random.default_rng([seed, step, 0x5EED])
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
