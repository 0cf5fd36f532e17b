import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CompileCounter, tiny_model
from loopformer import Depth, LoopLM
from loopformer.model.lm import NextTokenLoss
from loopformer.model.rope import RotaryEmbedding, apply_rope
from loopformer.memory import saved_tensor_bytes


def test_shapes_and_default_depth(injection_setup):
    model = tiny_model(**injection_setup)
    ids = torch.randint(0, 64, (3, 11))
    out = model(ids)
    assert out.logits.shape == (3, 11, 64)
    assert out.steps.shape == (3, 11)
    assert (out.steps == model.cfg.mean_steps).all()
    assert out.past_key_values is None


def test_deterministic_and_depth_dependent(injection_setup):
    model = tiny_model(**injection_setup)
    ids = torch.randint(0, 64, (2, 9))
    a, b = model(ids, num_steps=3).logits, model(ids, num_steps=3).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, model(ids, num_steps=6).logits, atol=1e-4)


def test_noise_init_is_reproducible_from_a_generator():
    model = tiny_model(state_init="noise")
    ids = torch.randint(0, 64, (2, 9))
    run = lambda seed: model(ids, 4, generator=torch.Generator().manual_seed(seed)).logits
    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


def test_truncated_backprop_matches_plain_forward_values(injection_setup):
    model = tiny_model(**injection_setup)
    ids = torch.randint(0, 64, (2, 8))
    plain = model(ids, num_steps=7).logits
    truncated = model(ids, num_steps=(5, 2)).logits
    torch.testing.assert_close(truncated, plain, rtol=0, atol=1e-6)


def test_truncated_backprop_gradients_flow_only_through_last_steps(injection_setup):
    """Gradients equal those of a model whose first n_nograd steps are constants."""
    model = tiny_model(**injection_setup).train()
    ids = torch.randint(0, 64, (2, 8))
    model(ids, num_steps=(4, 2)).logits.square().mean().backward()
    truncated = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Reference: run the first 4 steps, detach, and backprop through 2 more by hand.
    model.zero_grad()
    bb = model.backbone
    ctx = bb.context(2, 8, ids.device)
    e = bb.encode(model.embed(ids), ctx)
    s = e.detach() if model.cfg.state_init == "embed" else torch.zeros_like(e)
    injected = bb.core.injection.prepare(e)
    with torch.no_grad():
        for t in range(4):
            s = bb.core(s, injected, bb.core.step_embedding(t, s), ctx)
    for t in range(4, 6):
        s = bb.core(s, injected, bb.core.step_embedding(t, s), ctx)
    torch.nn.functional.linear(bb.decode(s, ctx), model.embed.weight).square().mean().backward()
    for name, grad in truncated.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-7,
                                   msg=name)
    assert truncated["backbone.core.blocks.0.attn.qkv.weight"].abs().sum() > 0


def _saved_bytes(model: LoopLM, ids, num_steps) -> int:
    """Bytes autograd keeps for the backward pass: training memory beyond the weights."""
    return saved_tensor_bytes(lambda: model(ids, num_steps=num_steps).logits.sum().backward())


def test_training_memory_does_not_grow_with_no_grad_steps(injection_setup):
    model = tiny_model(**injection_setup).train()
    ids = torch.randint(0, 64, (2, 16))
    few, many = _saved_bytes(model, ids, (2, 3)), _saved_bytes(model, ids, (40, 3))
    assert few == many
    assert _saved_bytes(model, ids, 12) > 2 * many  # without truncation it grows


def test_causality(injection_setup):
    model = tiny_model(**injection_setup)
    ids = torch.randint(0, 64, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 64
    a, b = model(ids, 3).logits, model(changed, 3).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_bidirectional_model_sees_the_future():
    model = tiny_model(causal=False)
    ids = torch.randint(0, 64, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 64
    assert not torch.allclose(model(ids, 3).logits[:, 0], model(changed, 3).logits[:, 0])


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       seed=st.integers(0, 10_000))
def test_batch_independence_with_left_padding(lengths, seed):
    """A sequence's logits depend neither on its batch-mates nor on its left padding."""
    model = tiny_model(injection="concat")
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, 64, (n,), generator=gen) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, width - len(seq):], mask[i, width - len(seq):] = seq, 1
    batched = model(ids, 3, attention_mask=mask).logits
    for i, seq in enumerate(seqs):
        alone = model(seq[None], 3).logits[0]
        torch.testing.assert_close(batched[i, width - len(seq):], alone, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(batched).all()  # padding rows too: no softmax over nothing


def test_rope_tables_stay_fp32_through_dtype_round_trip():
    model = tiny_model()
    cos = model.backbone.rope.cos.clone()
    ids = torch.randint(0, 64, (2, 10))
    reference = model(ids, 3).logits.detach()
    model.to(torch.bfloat16)
    assert model.backbone.rope.cos.dtype == torch.float32
    torch.testing.assert_close(model.backbone.rope.cos, cos, rtol=0, atol=0)
    bf16 = model(ids, 3).logits
    assert bf16.dtype == torch.bfloat16
    relative_error = lambda a: ((a.float() - reference).norm() / reference.norm()).item()
    assert relative_error(bf16) < 0.05
    model.to(torch.float32)
    torch.testing.assert_close(model.backbone.rope.cos, cos, rtol=0, atol=0)
    # Back in fp32 only the bf16 rounding of the weights remains.
    assert relative_error(model(ids, 3).logits) < 0.05


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(1, 20))
def test_rope_keeps_norms_and_scores_depend_on_relative_position(i, j, shift):
    rope = RotaryEmbedding(head_dim=8, max_seq_len=64)
    generator = torch.Generator().manual_seed(i * 100 + j)
    q, k = torch.randn(2, 1, 1, 8, generator=generator).unbind(0)

    def rotated(x, position):
        cos, sin = rope(torch.tensor([[position]]))
        return apply_rope(x[None], cos, sin)[0]

    torch.testing.assert_close(rotated(q, i).norm(), q.norm())
    score = (rotated(q, i) * rotated(k, j)).sum()
    shifted = (rotated(q, i + shift) * rotated(k, j + shift)).sum()
    torch.testing.assert_close(score, shifted, rtol=1e-5, atol=1e-5)


def test_next_token_loss_predicts_the_following_token():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3] = -100
    keep = labels[:, 1:] != -100
    expected = torch.nn.functional.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    torch.testing.assert_close(NextTokenLoss()(logits, labels), expected)


def test_structure_mask_restricts_attention():
    model = tiny_model(causal=False)
    ids = torch.randint(0, 64, (1, 6))
    alone = torch.eye(6, dtype=torch.bool)[None]  # each token sees only itself
    ctx = model.backbone.context(1, 6, ids.device, structure_mask=alone)
    (features,), _ = model.backbone(model.embed(ids), ctx, Depth(0, 3))
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 64
    (features2,), _ = model.backbone(model.embed(changed), ctx, Depth(0, 3))
    torch.testing.assert_close(features[:, :5], features2[:, :5], rtol=0, atol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_window_limits_the_reach_and_decodes_exactly(causal):
    window, steps = 2, 2
    model = tiny_model(causal=causal, attention_window=window, n_prelude=1, n_core=1, n_coda=1)
    reach = window * (model.cfg.n_prelude + steps * model.cfg.n_core + model.cfg.n_coda)
    ids = torch.randint(0, 64, (2, reach + 4))
    last = ids.shape[1] - 1
    out = model(ids, steps).logits[:, last]
    for position, moves in ((last - reach - 1, False), (last - reach, True)):
        changed = ids.clone()
        changed[:, position] = (changed[:, position] + 1) % 64
        moved = not torch.allclose(model(changed, steps).logits[:, last], out)
        assert moved == moves, position
    wide = tiny_model(causal=causal, attention_window=ids.shape[1], n_prelude=1, n_core=1,
                      n_coda=1)
    torch.testing.assert_close(wide(ids, steps).logits, tiny_model(
        causal=causal, n_prelude=1, n_core=1, n_coda=1)(ids, steps).logits)
    if causal:  # a cache keeps every key, and the window still applies to the past ones
        with torch.no_grad():
            full = model(ids, steps).logits
            cache = model(ids[:, :5], steps, use_cache=True).past_key_values
            pieces = [full[:, :0]]
            for t in range(5, ids.shape[1]):
                pieces.append(model(ids[:, t:t + 1], steps, past_key_values=cache,
                                    use_cache=True).logits)
        torch.testing.assert_close(torch.cat(pieces, 1), full[:, 5:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ids, match", [
    (torch.tensor([[1, 2, 64]]), r"token ids must lie in \[0, 64\)"),
    (torch.tensor([[-1, 2]]), r"token ids must lie in \[0, 64\)"),
    (torch.zeros(1, 65, dtype=torch.long), "exceeds max_seq_len=64"),
    (torch.zeros(4, dtype=torch.long), r"shape \(batch, seq_len\)"),
    (torch.zeros(1, 4), r"integer tensor"),
])
def test_bad_input_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        tiny_model()(ids, 2)


@pytest.mark.parametrize("num_steps", [0, -3, (2, 0), (-1, 2), 2.5, "8", (1, 2, 3), True])
def test_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        tiny_model()(torch.zeros(1, 4, dtype=torch.long), num_steps)


def test_bad_attention_mask_shape():
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        tiny_model()(torch.zeros(2, 4, dtype=torch.long), 2, attention_mask=torch.ones(2, 3))


def test_compiled_regions_do_not_recompile_for_a_new_number_of_steps():
    model = tiny_model().train()
    counter = CompileCounter()

    ids = torch.randint(0, 64, (2, 8))
    reference = model(ids, 3, labels=ids)
    torch._dynamo.reset()
    model.compile_regions(backend=counter)
    compiled = model(ids, 3, labels=ids)
    compiled.loss.backward()
    after_first = counter.count
    for steps in (7, 12, 3):
        model(ids, steps, labels=ids).loss.backward()
    assert after_first > 0 and counter.count == after_first
    # Truncated backprop adds the no-grad variant once, then reuses it for any split.
    model(ids, (5, 2)).logits.sum().backward()
    model(ids, (9, 3)).logits.sum().backward()
    assert counter.count == after_first + 1
    torch.testing.assert_close(compiled.logits, reference.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.loss, reference.loss, rtol=1e-5, atol=1e-6)
    # Cached decoding runs eagerly and still matches a full pass.
    with torch.no_grad():
        prefix = model(ids[:, :6], 4, use_cache=True)
        step = model(ids[:, 6:], 4, past_key_values=prefix.past_key_values, use_cache=True)
        torch.testing.assert_close(step.logits, model(ids, 4).logits[:, 6:], rtol=1e-4,
                                   atol=1e-5)
    torch._dynamo.reset()


def test_rms_norm_keeps_float64_and_has_correct_gradients():
    from loopformer.model.norm import RMSNorm

    norm = RMSNorm(8).double()
    norm.weight.data.normal_()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w: norm(x), (x, norm.weight))


def test_save_pretrained_round_trip(tmp_path):
    import json

    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = LoopLM.from_pretrained(tmp_path)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 6))
    with torch.no_grad():
        assert torch.equal(model(ids, 3).logits, loaded(ids, 3).logits)
    assert loaded.cfg == model.cfg and not loaded.training
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="another model type"):
        LoopLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a saved LoopLM"):
        LoopLM.from_pretrained(tmp_path / "nowhere")
