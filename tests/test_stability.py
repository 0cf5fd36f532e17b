import pytest
import torch

from conftest import INJECTION_SETUPS, VARIANTS, build_variant, tiny_model
from loopformer.model.injection import LTI_MAX_DECAY
from loopformer.model.observers import StateCollector


def lti_model():
    return tiny_model(injection="lti", state_init="embed")


@pytest.mark.parametrize("value", [-1e30, -50.0, -17.0, -8.0, 0.0, 8.0, 17.0, 50.0, 1e30,
                                   float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_spectral_radius_below_one_for_any_parameter(value, dtype):
    model = lti_model().to(dtype)
    with torch.no_grad():
        model.core.injection.decay_logit.fill_(value)
    rho = model.spectral_radius()
    assert 0.0 <= rho <= LTI_MAX_DECAY < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_spectral_radius_below_one_after_a_huge_optimiser_step(dtype):
    model = lti_model().to(dtype).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e8)
    ids = torch.randint(0, 64, (2, 8))
    # Push every decay towards 1: minimise -sum(decay) with an absurd learning rate.
    loss = model(ids, 4).logits.float().mean() - model.core.injection.decay().sum()
    loss.backward()
    optimiser.step()
    assert model.core.injection.decay_logit.min() > 1e3  # the step really was huge
    assert model.spectral_radius() < 1.0
    assert model.spectral_radius() == pytest.approx(LTI_MAX_DECAY)


def test_gradient_reaches_the_decay_everywhere():
    """Bounded by construction without a clamp, so the gradient never dies."""
    model = lti_model()
    decay = model.core.injection.decay()
    decay.sum().backward()
    assert (model.core.injection.decay_logit.grad != 0).all()


def test_spectral_radius_is_none_without_lti():
    assert tiny_model(injection="concat").spectral_radius() is None


def assert_bounded_unroll(model, steps=256):
    """`steps` core steps, far past any training depth: the state neither explodes nor drifts
    upward."""
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12))
    bb = model.backbone
    ctx = bb.context(2, 12, ids.device)
    with torch.no_grad():
        e = bb.encode(model.embed(ids), ctx)
        collector = StateCollector()
        bb.core.unroll(e, ctx, steps, observers=[collector])
        states = collector.states
    rms = torch.stack([s.float().pow(2).mean(-1).sqrt().max() for s in states])
    assert torch.isfinite(rms).all()
    early, late = rms[:steps // 2].max(), rms[steps // 2:].max()
    assert late <= 1.5 * early + 1e-3, (early, late)
    assert late < 100.0


@pytest.mark.parametrize("setup", INJECTION_SETUPS, ids=lambda d: d["injection"])
@pytest.mark.parametrize("norm", ["pre", "sandwich"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_unroll_stays_finite_and_bounded(setup, norm, dtype):
    assert_bounded_unroll(tiny_model(norm=norm, **setup).to(dtype))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_unroll_of_every_variant_stays_bounded(variant, dtype):
    """MLA, MoE and active per-step adapters (steps past their table reuse the last one) under
    concat (Huginn) and lti (OpenMythos), and the scaled-down presets (ACT off: it would stop
    the loop once every token halts)."""
    preset = variant.startswith("preset-")
    for setup in [dict(halting="none")] if preset else INJECTION_SETUPS[1:3]:
        model = build_variant(variant, **setup)
        assert_bounded_unroll(model.to(dtype))
