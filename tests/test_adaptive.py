import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from loopformer import KVCache
from loopformer.model.cache import SlotKey
from loopformer.model.exits import DEFAULT_THRESHOLDS

CRITERIA = sorted(DEFAULT_THRESHOLDS)
# Thresholds that stop some tokens early on the tiny random model, so the tests see both.
LOOSE = {"kl": 1e-2, "entropy-diff": 1e-2, "latent-diff": 0.3, "cosine": 0.05,
         "argmax-stability": 2, "kl-entropy": 1e-2}


def exit_kwargs(criterion, **more):
    return dict(exit_criterion=criterion, exit_threshold=LOOSE[criterion],
                exit_entropy=10.0, **more)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_exit_steps_stay_within_bounds(criterion):
    model = tiny_model(injection="gated", state_init="embed")
    ids = torch.randint(0, 64, (3, 12))
    out = model(ids, 16, min_steps=3, **exit_kwargs(criterion))
    assert out.steps.shape == (3, 12)
    assert int(out.steps.min()) >= 3 and int(out.steps.max()) <= 16
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("criterion", CRITERIA)
def test_a_threshold_that_cannot_be_met_runs_every_step(criterion):
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 9))
    never = 10**9 if criterion == "argmax-stability" else 0.0
    out = model(ids, 7, exit_criterion=criterion, exit_threshold=never)
    assert (out.steps == 7).all()
    torch.testing.assert_close(out.logits, model(ids, 7).logits, rtol=0, atol=1e-6)


def test_some_tokens_exit_early_and_keep_their_state():
    model = tiny_model(injection="gated", state_init="embed")
    ids = torch.randint(0, 64, (2, 12))
    out = model(ids, 24, **exit_kwargs("latent-diff"))
    assert int(out.steps.min()) < 24  # the criterion really fired


@pytest.mark.parametrize("criterion", CRITERIA)
def test_a_sequence_gets_the_same_answer_alone_or_in_a_batch(criterion):
    model = tiny_model(injection="gated", state_init="embed")
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 64, (n,), generator=gen) for n in (5, 9, 12)]
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, 12 - len(seq):], mask[i, 12 - len(seq):] = seq, 1
    batched = model(ids, 16, attention_mask=mask, **exit_kwargs(criterion))
    for i, seq in enumerate(seqs):
        alone = model(seq[None], 16, **exit_kwargs(criterion))
        assert torch.equal(batched.steps[i, 12 - len(seq):], alone.steps[0])
        torch.testing.assert_close(batched.logits[i, 12 - len(seq):], alone.logits[0],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["latest", "compress-s2", "last-step"])
@torch.no_grad()  # rows leave the loop in inference only
def test_decoding_a_batch_with_exits_equals_decoding_each_sequence_alone(policy):
    # Rows whose token has exited leave the loop; their deeper cache entries are their deepest
    # ones, so later tokens see what they would see had the row been decoded alone.
    model = tiny_model(injection="gated", state_init="embed")
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(3))
    options = exit_kwargs("latent-diff")

    def decode(rows):
        cache, logits, steps = KVCache.policy(policy), [], []
        for t in range(ids.shape[1]):
            out = model(ids[rows, t:t + 1], 12, past_key_values=cache, use_cache=True,
                        **options)
            logits.append(out.logits[:, -1])
            steps.append(out.steps[:, -1])
        return torch.stack(logits, 1), torch.stack(steps, 1)

    batch_logits, batch_steps = decode([0, 1, 2])
    assert len(set(batch_steps.flatten().tolist())) > 1  # rows really stopped apart
    for row in range(3):
        logits, steps = decode([row])
        assert torch.equal(batch_steps[row], steps[0])
        torch.testing.assert_close(batch_logits[row], logits[0], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_rows_whose_tokens_all_exited_leave_the_loop():
    model = tiny_model(injection="gated", state_init="embed")
    rows_per_call = []
    model.core.blocks.register_forward_hook(lambda m, args, out: rows_per_call.append(
        out.shape[0]))
    ids = torch.randint(0, 64, (4, 6))
    out = model(ids, 24, **exit_kwargs("latent-diff"))
    slowest = out.steps.max(1).values  # per row
    assert len(rows_per_call) == int(slowest.max())
    assert rows_per_call == [int((slowest > t).sum()) for t in range(len(rows_per_call))]
    assert min(rows_per_call) < 4  # some rows finished before others


def test_unknown_criterion_and_bad_exit_arguments():
    model = tiny_model()
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown exit_criterion"):
        model(ids, 4, exit_criterion="vibes")
    with pytest.raises(ValueError, match="min_steps"):
        model(ids, 4, exit_criterion="kl", min_steps=0)


# --- learned halting (ACT) --------------------------------------------------------------------

def act_model(**overrides):
    return tiny_model(halting="act", mean_steps=8, **overrides)


@pytest.mark.parametrize("grad", [True, False])
def test_act_step_weights_sum_to_one_for_every_token(grad):
    model = act_model()
    with torch.no_grad():  # make halting fast and uneven so some tokens stop early
        model.core.halting.proj.weight.normal_(std=2.0)
        model.core.halting.proj.bias.fill_(-0.5)
    bb = model.backbone
    ids = torch.randint(0, 64, (3, 10))
    ctx = bb.context(3, 10, ids.device)
    with torch.set_grad_enabled(grad):
        out = bb.core.unroll(bb.encode(model.embed(ids), ctx), ctx, 12)
    weights = out.step_weights.sum(-1)
    torch.testing.assert_close(weights, torch.ones_like(weights), rtol=0, atol=1e-6)
    assert (out.step_weights >= 0).all()
    assert int(out.token_steps.min()) < 12  # some tokens halted before the budget
    assert out.steps == (12 if grad else int(out.token_steps.max()))  # early stop only w/o grad
    torch.testing.assert_close(out.ponder, out.token_steps + out.step_weights.gather(
        -1, (out.token_steps - 1)[..., None]).squeeze(-1), rtol=0, atol=1e-6)


def test_act_early_stop_does_not_change_the_output():
    model = act_model()
    with torch.no_grad():
        model.core.halting.proj.weight.normal_(std=2.0)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        stopped = model(ids, 12)
    with torch.enable_grad():
        full = model(ids, 12)
    torch.testing.assert_close(stopped.logits, full.logits.detach(), rtol=0, atol=1e-5)
    assert torch.equal(stopped.steps, full.steps)


def test_act_uses_its_budget_at_initialisation():
    model = act_model()
    out = model(torch.randint(0, 64, (2, 10)), 12)
    # p = 1/mean_steps at init: tokens think ~mean_steps (8) steps, not 2-3 (OpenMythos)
    assert int(out.steps.min()) >= 7
    assert out.ponder is not None and (out.ponder >= out.steps).all()


def test_act_last_step_takes_the_remainder_when_the_loop_runs_out():
    model = act_model()
    bb = model.backbone
    ids = torch.randint(0, 64, (1, 6))
    ctx = bb.context(1, 6, ids.device)
    out = bb.core.unroll(bb.encode(model.embed(ids), ctx), ctx, 3)  # budget below halting
    assert (out.token_steps == 3).all()
    torch.testing.assert_close(out.step_weights.sum(-1), torch.ones(1, 6), rtol=0, atol=1e-6)
    assert (out.step_weights[..., -1] > out.step_weights[..., 0]).all()


def test_act_and_exit_criterion_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        act_model()(torch.zeros(1, 3, dtype=torch.long), 4, exit_criterion="kl")


# --- cache under adaptive depth ---------------------------------------------------------------

def test_latest_cache_equals_exact_at_fixed_depth():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 10))
    out = model(ids[:, :6], 5, past_key_values=KVCache(mode="latest"), use_cache=True)
    for i in range(6, 10):
        out = model(ids[:, i:i + 1], 5, past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(out.logits[:, -1], model(ids, 5).logits[:, -1], rtol=0, atol=1e-4)


def test_latest_fallback_lets_later_tokens_think_longer():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 8))
    out = model(ids[:, :4], 2, past_key_values=KVCache(mode="latest"), use_cache=True)
    out = model(ids[:, 4:6], 6, past_key_values=out.past_key_values, use_cache=True)
    out = model(ids[:, 6:], 3, past_key_values=out.past_key_values, use_cache=True)
    cache = out.past_key_values
    assert cache.seq_len == 8 and torch.isfinite(out.logits).all()
    assert all(k.shape[2] == 8 for k, _ in cache.layers.values())  # every slot full length
    # Positions 0-3 stopped at step 2: at step 5 they show their deepest (step 1) entry.
    k1, k5 = cache.layers[("core", 1, 0)][0], cache.layers[("core", 5, 0)][0]
    assert torch.equal(k5[:, :, :4], k1[:, :, :4])
    assert not torch.equal(k5[:, :, 4:6], k1[:, :, 4:6])


def test_exit_criterion_decoding_with_the_latest_cache():
    model = tiny_model(injection="gated", state_init="embed")
    ids = torch.randint(0, 64, (2, 4))
    tokens = model.generate(ids, 8, 16, **{k: v for k, v in exit_kwargs("latent-diff").items()
                                           if k != "exit_entropy"})
    assert tokens.shape == (2, 12)


def test_compressed_cache_memory_does_not_grow_with_steps():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 10))
    size = lambda steps, slots: model(ids, steps, past_key_values=KVCache(core_slots=slots),
                                      use_cache=True).past_key_values.nbytes()
    assert size(8, 4) == size(16, 4) == size(32, 4)
    exact = lambda steps: model(ids, steps, use_cache=True).past_key_values.nbytes()
    assert exact(16) > exact(8)
    assert size(16, 4) < exact(16)


def test_first_and_last_step_policies_keep_that_steps_entries():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 6))
    steps = 5
    with torch.no_grad():
        exact = model(ids[:, :4], steps, use_cache=True).past_key_values
        model(ids[:, 4:], steps, past_key_values=exact, use_cache=True)
        for name, step in (("first-step", 0), ("last-step", steps - 1)):
            cache = KVCache.policy(name)
            model(ids[:, :4], steps, past_key_values=cache, use_cache=True)
            model(ids[:, 4:], steps, past_key_values=cache, use_cache=True)
            for layer in range(model.cfg.n_core):
                kept = cache.layers[SlotKey("core", 0, layer)]
                want = exact.layers[SlotKey("core", step, layer)]
                assert len(cache.buffers) == model.cfg.n_prelude + model.cfg.n_core + \
                    model.cfg.n_coda
                # Step 0 never depends on the policy; the prefix's last step does not either.
                upto = 6 if name == "first-step" else 4
                for a, b in zip(kept, want):
                    torch.testing.assert_close(a[..., :upto, :], b[..., :upto, :])
        one = [model(ids, 1, past_key_values=KVCache.policy(n), use_cache=True).logits
               for n in ("exact", "first-step", "last-step", "compress-s2")]
    for logits in one[1:]:
        torch.testing.assert_close(logits, one[0])
    for bad in ("compress-s", "middle-step", "compress-sx"):
        with pytest.raises(ValueError, match="unknown cache policy"):
            KVCache.policy(bad)
    with pytest.raises(ValueError, match="keep"):
        KVCache(core_slots=2, keep="first")


def test_compressed_cache_decodes_and_stays_close_to_exact():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 4))
    compressed = model.generate(ids, 10, 8, cache=KVCache(core_slots=4))
    assert compressed.shape == (1, 14)
    with pytest.raises(ValueError, match="empty KVCache"):
        cache = model(ids, 8, use_cache=True).past_key_values
        model.generate(ids, 2, 8, cache=cache)


# --- decoding features ------------------------------------------------------------------------

def test_warm_start_starts_from_the_previous_final_state():
    model = tiny_model(injection="add")
    ids = torch.randint(0, 64, (1, 5))
    warm = model.generate(ids, 6, 4, warm_start=True)
    # The same by hand: each new token starts from the last token's final state.
    out = model(ids, 4, use_cache=True)
    tokens = ids
    for _ in range(6):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat((tokens, nxt), dim=1)
        if tokens.shape[1] < 11:
            out = model(nxt, 4, past_key_values=out.past_key_values, use_cache=True,
                        initial_state=out.state[:, -1:])
    assert torch.equal(warm, tokens)
    first = model(ids, 4, use_cache=True)
    nxt = first.logits[:, -1:].argmax(-1)
    cold = model(nxt, 4, past_key_values=first.past_key_values)
    first = model(ids, 4, use_cache=True)
    hot = model(nxt, 4, past_key_values=first.past_key_values, initial_state=first.state[:, -1:])
    assert not torch.allclose(cold.logits, hot.logits)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), draft_steps=st.integers(1, 5), draft_tokens=st.integers(1, 5),
       prompt=st.integers(1, 6))
def test_speculative_decoding_equals_greedy(seed, draft_steps, draft_tokens, prompt):
    model = tiny_model(seed=seed % 3)
    ids = torch.randint(0, 64, (1, prompt), generator=torch.Generator().manual_seed(seed))
    greedy = model.generate(ids, 12, 5)
    spec, stats = model.generate_speculative(ids, 12, 5, draft_steps=draft_steps,
                                             draft_tokens=draft_tokens)
    assert torch.equal(spec, greedy)
    assert 0 <= stats["acceptance_rate"] <= 1 and stats["rounds"] >= 1


def test_speculative_with_full_depth_drafts_accepts_everything():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 4))
    _, stats = model.generate_speculative(ids, 12, 5, draft_steps=5, draft_tokens=4)
    assert stats["acceptance_rate"] == 1.0


def test_speculative_rejects_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="batch 1"):
        model.generate_speculative(torch.zeros(2, 3, dtype=torch.long), 4, 4)
    with pytest.raises(ValueError, match="draft_steps"):
        model.generate_speculative(torch.zeros(1, 3, dtype=torch.long), 4, 4, draft_steps=9)
