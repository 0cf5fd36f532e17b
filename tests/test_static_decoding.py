"""generate's fixed-shape decoding (loopformer.model.static_decoding) against the general
cached forward pass, which the rest of the cache tests check against the full forward."""

import pytest
import torch

from conftest import MLA, MOE, CompileCounter, tiny_model
from loopformer import KVCache
from loopformer.model.static_decoding import StaticDecoder


def decode_generally(model, ids, new, steps, cache=None, attention_mask=None, **options):
    """Greedy decoding one general cached call per token (no fixed shapes)."""
    out = model(ids, steps, attention_mask=attention_mask, past_key_values=cache,
                use_cache=True, **options)
    tokens = ids
    for _ in range(new):
        token = out.logits[:, -1].argmax(-1)
        tokens = torch.cat((tokens, token[:, None]), 1)
        if tokens.shape[1] == ids.shape[1] + new:
            return tokens, out.past_key_values
        out = model(token[:, None], steps, past_key_values=out.past_key_values,
                    use_cache=True, **options)


def count_static_steps(monkeypatch) -> list:
    calls = []
    step = StaticDecoder.step
    monkeypatch.setattr(StaticDecoder, "step",
                        lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    return calls


@pytest.mark.parametrize("policy", ["exact", "latest", "compress-s2", "last-step"])
def test_generate_decodes_at_fixed_shapes_what_general_calls_decode(policy, monkeypatch):
    model = tiny_model(n_core=2)
    ids = torch.randint(1, 64, (2, 7))
    ids[1, :3] = 0
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    calls = count_static_steps(monkeypatch)
    cache = KVCache.policy(policy)
    out = model.generate(ids, 9, 3, attention_mask=mask, cache=cache)
    assert len(calls) == 8  # every token after the prompt's
    reference, general = decode_generally(model, ids, 9, 3, KVCache.policy(policy), mask)
    assert torch.equal(out, reference)
    # The cache holds what general calls leave: the next call continues from either alike.
    assert cache.seq_len == general.seq_len == 15
    assert torch.equal(cache.positions, general.positions)
    assert torch.equal(cache.key_mask, general.key_mask)
    token = out[:, -1:]
    torch.testing.assert_close(model(token, 3, past_key_values=cache).logits,
                               model(token, 3, past_key_values=general).logits,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", [MLA, MOE, dict(step_lora_rank=2), dict(norm="sandwich")],
                         ids=["mla", "moe", "lora", "sandwich"])
def test_every_variant_decodes_at_fixed_shapes_exactly(variant):
    model = tiny_model(**variant)
    ids = torch.randint(0, 64, (2, 5))
    reference, _ = decode_generally(model, ids, 6, 4)
    assert torch.equal(model.generate(ids, 6, 4), reference)


def test_warm_start_and_noise_init_decode_as_general_calls():
    model = tiny_model(state_init="noise")
    ids = torch.randint(0, 64, (2, 5))
    draws = lambda: dict(generator=torch.Generator().manual_seed(3))
    reference, _ = decode_generally(model, ids, 6, 3, **draws())
    assert torch.equal(model.generate(ids, 6, 3, **draws()), reference)
    warm = model.generate(ids, 6, 3, warm_start=True, **draws())
    assert warm.shape == reference.shape
    assert torch.equal(warm, model.generate(ids, 6, 3, warm_start=True, **draws()))


def test_exits_and_sliding_windows_keep_the_general_path(monkeypatch):
    calls = count_static_steps(monkeypatch)
    tiny_model().generate(torch.randint(0, 64, (1, 4)), 4, 3, exit_criterion="kl",
                          exit_threshold=1e-3)
    tiny_model(attention_window=3).generate(torch.randint(0, 64, (1, 4)), 4, 3)
    assert calls == []


def test_generate_compile_true_compiles_once_for_every_prompt_length_in_a_bucket():
    model = tiny_model()
    prompts = [torch.randint(0, 64, (1, n)) for n in (4, 9, 12)]
    eager = [model.generate(prompt, 6, 3) for prompt in prompts]
    counter = CompileCounter()
    torch._dynamo.reset()
    model.compile_regions(backend=counter)
    counts = []
    for prompt, expected in zip(prompts, eager):
        assert torch.equal(model.generate(prompt, 6, 3, compile=True), expected)
        counts.append(counter.count)
    # The prompt's regions turn dynamic at the second length; the decoding graph is compiled
    # once, as every length here shares a capacity of 64 tokens.
    assert 0 < counts[1] == counts[2]
    torch._dynamo.reset()


@pytest.mark.parametrize("kv_heads,v_dim,masked,scale", [(4, 8, True, None), (2, 8, False, None),
                                                         (4, 6, True, 0.3)])
def test_one_query_attention_equals_sdpa(kv_heads, v_dim, masked, scale):
    """The matmul form compiled CPU decoding uses: grouped heads, a key mask, MLA's own value
    width and scale."""
    import torch.nn.functional as F
    from loopformer.model.attention import attend_one_query
    q, k = torch.randn(3, 4, 1, 8), torch.randn(3, kv_heads, 11, 8)
    v = torch.randn(3, kv_heads, 11, v_dim)
    mask = torch.rand(3, 1, 1, 11) < 0.6 if masked else None
    if masked:
        mask[..., 0] = True  # every row sees a key
    groups = 4 // kv_heads
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=mask,
        scale=scale)
    torch.testing.assert_close(attend_one_query(q, k, v, mask, scale), expected)
