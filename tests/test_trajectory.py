"""classify_trajectory on synthetic trajectories whose kind is known, across widths, scales,
noise and lengths."""

import math

import pytest
import torch

from loopformer.analysis import classify_trajectory
from loopformer.analysis.trajectory import describe_trajectory

WIDTHS, SCALES = (3, 32, 256), (1e-3, 1.0, 1e3)


def frame(d: int, gen: torch.Generator):
    """A centre and two orthonormal directions in R^d, with |centre| = 1."""
    q, _ = torch.linalg.qr(torch.randn(d, 3, generator=gen, dtype=torch.float64))
    return q[:, 0], q[:, 1], q[:, 2]


def noisy(points: torch.Tensor, size: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise of about `size` in norm per state, whatever the width."""
    d = points.shape[1]
    return points + size * torch.randn(points.shape, generator=gen, dtype=points.dtype) / \
        math.sqrt(d)


def fixed_point(steps, d, gen):
    c, u, _ = frame(d, gen)  # converges geometrically onto c from |s_0 - c| = 1
    t = torch.arange(steps, dtype=torch.float64)[:, None]
    return noisy(c + 0.6 ** t * u, 1e-4, gen)


def orbit(steps, d, gen, period):
    c, u, v = frame(d, gen)  # a cycle of `period` states on a circle of radius 0.5 around c
    angle = 2 * math.pi * torch.arange(steps, dtype=torch.float64)[:, None] / period
    transient = 0.5 ** torch.arange(steps, dtype=torch.float64)[:, None]
    return noisy(c + 0.5 * (angle.cos() * u + angle.sin() * v) + transient * c, 5e-3, gen)


def slider(steps, d, gen):
    c, u, _ = frame(d, gen)  # moves 0.1 per step along u (10% of |s| at the start)
    t = torch.arange(steps, dtype=torch.float64)[:, None]
    return noisy(c + 0.1 * t * u, 0.01, gen)


def random_walk(steps, d, gen):
    c, _, _ = frame(d, gen)
    return c + 0.1 * torch.randn(steps, d, generator=gen, dtype=torch.float64).cumsum(0) / \
        math.sqrt(d) * math.sqrt(3)


KINDS = {"fixed_point": fixed_point, "slider": slider, "other": random_walk,
         "orbit": lambda steps, d, gen: orbit(steps, d, gen, 3)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("d", WIDTHS)
@pytest.mark.parametrize("scale", SCALES)
def test_labels_known_trajectories_at_every_width_and_scale(kind, d, scale):
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        for steps in (16, 32):
            states = scale * KINDS[kind](steps, d, gen)
            assert classify_trajectory(states.float()) == kind, \
                (kind, d, scale, seed, steps, describe_trajectory(states))


@pytest.mark.parametrize("period", [2, 3, 5, 7])
def test_orbits_report_their_period(period):
    gen = torch.Generator().manual_seed(period)
    info = describe_trajectory(orbit(40, 64, gen, period))
    assert info.label == "orbit" and info.period == period


def test_a_slowing_approach_is_not_a_slider_and_iid_points_are_other():
    gen = torch.Generator().manual_seed(0)
    c, u, _ = frame(16, gen)
    t = torch.arange(32, dtype=torch.float64)[:, None]
    slowing = c + 2.0 * 0.85 ** t * u  # straight, but each step 15% shorter
    info = describe_trajectory(slowing)
    assert info.drift > 0.99 and info.label != "slider"
    scattered = torch.randn(32, 16, generator=gen)
    assert classify_trajectory(scattered) == "other"


def test_bad_input_is_refused_and_nan_is_other():
    with pytest.raises(ValueError, match="at least 8 steps"):
        classify_trajectory(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="steps, d"):
        classify_trajectory(torch.zeros(16))
    with pytest.raises(ValueError, match="tail"):
        classify_trajectory(torch.randn(16, 4), tail=0.0)
    broken = torch.randn(16, 4)
    broken[9] = float("nan")
    assert classify_trajectory(broken) == "other"
