import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import INJECTION_SETUPS, CompileCounter, decode_in_pieces, tiny_model
from loopformer import Depth, KVCache
from loopformer.model.cache import cache_slots


@pytest.mark.parametrize("norm", ["pre", "sandwich"])
def test_chunked_prefill_then_token_by_token_equals_full_forward(injection_setup, norm):
    model = tiny_model(norm=norm, **injection_setup)
    ids = torch.randint(0, 64, (2, 20))
    full = model(ids, 5).logits
    cuts = [6, 11, *range(12, 20)]  # two prefill chunks, then one token at a time
    incremental, cache = decode_in_pieces(model, ids, cuts, 5)
    torch.testing.assert_close(incremental, full, rtol=0, atol=1e-4)
    assert cache.seq_len == 20
    # One slot per unrolled layer: prelude + core x steps + coda.
    assert len(cache) == model.cfg.n_prelude + 5 * model.cfg.n_core + model.cfg.n_coda
    assert list(cache.layers) == cache_slots(model.cfg, Depth(0, 5))


@settings(max_examples=12, deadline=None)
@given(setup=st.sampled_from(INJECTION_SETUPS), seed=st.integers(0, 1000),
       cuts=st.lists(st.integers(1, 15), max_size=4, unique=True))
def test_any_split_of_the_prompt_gives_the_same_logits(setup, seed, cuts):
    model = tiny_model(**setup)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed))
    incremental, _ = decode_in_pieces(model, ids, sorted(cuts), (1, 2))
    torch.testing.assert_close(incremental, model(ids, 3).logits, rtol=0, atol=1e-4)


def test_cache_with_left_padding_matches_unpadded_decoding():
    model = tiny_model()
    seq = torch.randint(0, 64, (1, 9))
    padded = torch.cat((torch.zeros(1, 3, dtype=torch.long), seq), dim=1)
    mask = torch.tensor([[0, 0, 0] + [1] * 9])
    out = model(padded[:, :8], 4, attention_mask=mask[:, :8], use_cache=True)
    out = model(padded[:, 8:], 4, past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(out.logits[0], model(seq, 4).logits[0, 5:], rtol=0, atol=1e-4)


def test_cache_rejects_a_different_depth():
    model = tiny_model()
    out = model(torch.randint(0, 64, (1, 5)), 3, use_cache=True)
    with pytest.raises(ValueError, match="same num_steps"):
        model(torch.randint(0, 64, (1, 1)), 5, past_key_values=out.past_key_values)
    out = model(torch.randint(0, 64, (1, 5)), 3, use_cache=True)
    out = model(torch.randint(0, 64, (1, 1)), 2, past_key_values=out.past_key_values,
                use_cache=True)
    with pytest.raises(ValueError, match="stale"):
        model(torch.randint(0, 64, (1, 1)), 3, past_key_values=out.past_key_values)


def test_cache_counts_bytes():
    model = tiny_model()
    cache = model(torch.randint(0, 64, (1, 10)), 2, use_cache=True).past_key_values
    slots = model.cfg.n_prelude + 2 * model.cfg.n_core + model.cfg.n_coda
    per_slot = 2 * 10 * model.cfg.kv_heads * model.cfg.head_dim * 4  # k and v, fp32
    assert cache.nbytes() == slots * per_slot


def test_cache_needs_a_causal_model():
    with pytest.raises(ValueError, match="causal"):
        tiny_model(causal=False)(torch.zeros(1, 3, dtype=torch.long), 2, use_cache=True)


def greedy_without_cache(model, ids, n, num_steps):
    for _ in range(n):
        next_token = model(ids, num_steps).logits[:, -1].argmax(-1)
        ids = torch.cat((ids, next_token[:, None]), dim=1)
    return ids


def test_greedy_generate_equals_recomputing_the_prefix(injection_setup):
    model = tiny_model(**injection_setup)
    ids = torch.randint(0, 64, (2, 5))
    out = model.generate(ids, max_new_tokens=10, num_steps=4)
    assert out.shape == (2, 15)
    assert torch.equal(out, greedy_without_cache(model, ids, 10, 4))


def test_sampling_is_reproducible_and_top_k_one_is_greedy():
    model = tiny_model()
    ids = torch.randint(0, 64, (3, 4))
    sample = lambda **kw: model.generate(ids, 8, 3, do_sample=True,
                                         generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(sample(temperature=0.7, top_p=0.9), sample(temperature=0.7, top_p=0.9))
    assert torch.equal(sample(top_k=1), model.generate(ids, 8, 3))
    assert torch.equal(sample(top_p=1e-6), model.generate(ids, 8, 3))
    assert not torch.equal(sample(temperature=5.0), sample(temperature=5.0, top_k=2))


def test_eos_stops_and_pads():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 4))
    greedy = model.generate(ids, 6, 3)
    eos = int(greedy[0, 5])  # the second generated token of sequence 0
    out = model.generate(ids, 6, 3, eos_token_id=eos, pad_token_id=63)
    assert out[0, 5] == eos and (out[0, 6:] == 63).all()
    if eos not in greedy[1, 4:].tolist():
        assert torch.equal(out[1], greedy[1, : out.shape[1]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=100), "exceeds max_seq_len"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=1.5), "top_p"),
])
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model().generate(torch.zeros(1, 3, dtype=torch.long), **kwargs)


def test_empty_cache_object_can_be_passed_in():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 6))
    out = model(ids, 2, past_key_values=KVCache(), use_cache=True)
    torch.testing.assert_close(out.logits, model(ids, 2).logits, rtol=0, atol=1e-6)


def test_cache_buffers_grow_geometrically_not_per_token():
    model = tiny_model()
    out = model(torch.randint(0, 64, (1, 4)), 2, use_cache=True)
    cache = out.past_key_values
    prefill_bytes = cache.nbytes()
    sizes = []
    for _ in range(8):  # 4 -> 12 tokens: the buffers double to 8, then to 16
        out = model(torch.randint(0, 64, (1, 1)), 2, past_key_values=cache, use_cache=True)
        sizes.append(cache.nbytes())
    assert sizes == [2 * prefill_bytes] * 4 + [4 * prefill_bytes] * 4
    assert all(k.shape[2] == 12 for k, _ in cache.layers.values())


def test_compiled_decoding_matches_eager_and_compiles_once_for_all_positions():
    model = tiny_model()
    ids = torch.randint(1, 64, (2, 6))
    ids[0, :2] = 0
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0  # left padding
    reference = model.generate(ids, 8, 3, attention_mask=mask)
    latest = model.generate(ids, 8, 3, attention_mask=mask, cache=KVCache(mode="latest"))
    counter = CompileCounter()

    torch._dynamo.reset()
    model.compile_regions(backend=counter)
    assert torch.equal(model.generate(ids, 8, 3, attention_mask=mask), reference)
    first = counter.count
    assert first > 0
    assert torch.equal(model.generate(ids, 5, 3, attention_mask=mask), reference[:, :11])
    assert counter.count == first  # new positions and cache capacities reuse the graph
    # A "latest" cache at a fixed depth writes every slot too: the same graph serves it.
    assert torch.equal(model.generate(ids, 8, 3, attention_mask=mask,
                                      cache=KVCache(mode="latest")), latest)
    assert counter.count == first
    # Speculative decoding verifies several tokens per call and rolls the cache back.
    speculative, _ = model.generate_speculative(ids[1:], 8, 3, draft_steps=1, draft_tokens=3)
    assert torch.equal(speculative, reference[1:])
    torch._dynamo.reset()


def test_compiled_decoding_matches_eager_for_every_injection(injection_setup):
    # Sandwich blocks here; the default pre-norm blocks are covered above.
    model = tiny_model(norm="sandwich", **injection_setup)
    ids = torch.randint(0, 64, (1, 5))
    reference = model.generate(ids, 4, 3, warm_start=True)
    torch._dynamo.reset()
    model.compile_regions(backend="eager")
    assert torch.equal(model.generate(ids, 4, 3, warm_start=True), reference)
    torch._dynamo.reset()


def test_compiled_regions_with_a_cache_filled_on_demand_stop_recompiling():
    """Exits keep a cached call out of the one-graph path: the compiled regions then see the
    cache through SlotViews of their own layers only, so a bounded set of graphs serves every
    position (no recompilation per step or per token)."""
    model = tiny_model(n_core=2, max_seq_len=128)
    ids = torch.randint(0, 64, (1, 12))
    options = dict(exit_criterion="latent-diff", exit_threshold=0.3)
    reference = model.generate(ids, 20, 10, **options)
    counter = CompileCounter()

    torch._dynamo.reset()
    model.compile_regions(backend=counter)
    assert torch.equal(model.generate(ids, 20, 10, **options), reference)
    first = counter.count
    assert torch.equal(model.generate(ids, 20, 10, **options), reference)
    assert 0 < first == counter.count
    torch._dynamo.reset()
