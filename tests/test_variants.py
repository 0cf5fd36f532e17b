"""The seeds' other variants: multi-head latent attention, mixture of experts, per-step LoRA."""

import pytest
import torch
import torch.nn.functional as F

from conftest import (INJECTION_SETUPS, MLA, MOE, SCALED_DOWN, VARIANTS, build_variant,
                      decode_in_pieces, randomise_adapters, tiny_config, tiny_model)
from loopformer import KVCache, LoopLM, ModelConfig
from loopformer.model.moe import MoE, expert_matmul, update_balance


@pytest.mark.parametrize("changes, field", [
    (dict(attention="mla", kv_lora_rank=32), "kv_lora_rank"),  # not smaller than d_model
    (dict(attention="mla", q_lora_rank=40), "q_lora_rank"),
    (dict(attention="mla", rope_head_dim=3), "rope_head_dim"),
    (dict(ffn="moe", n_experts=0), "n_experts"),
    (dict(ffn="moe", n_experts=4, experts_per_token=5), "experts_per_token"),
    (dict(ffn="moe", expert_hidden=12), "expert_hidden"),
    (dict(step_lora_rank=-1), "step_lora_rank"),
    (dict(attention="mqa"), "attention"),
    (dict(ffn="sparse"), "ffn"),
    (dict(moe_balance="none"), "moe_balance"),
    (dict(attention="mla", n_kv_heads=2), "n_kv_heads"),
    (dict(step_lora_rank=4, core="fixed"), "step_lora_rank"),
])
def test_bad_variant_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}"):
        ModelConfig.from_preset("tiny", **{"n_kv_heads": None, **changes})


# --- multi-head latent attention --------------------------------------------------------------

@pytest.mark.parametrize("setup", INJECTION_SETUPS, ids=lambda d: d["injection"])
@pytest.mark.parametrize("mode", ["exact", "latest", "compressed"])
def test_mla_cached_decoding_equals_the_full_forward(setup, mode):
    model = tiny_model(**MLA, **setup)
    ids = torch.randint(0, 64, (2, 16))
    cache = {"exact": None, "latest": KVCache(mode="latest"),
             "compressed": KVCache(core_slots=5)}[mode]  # as many slots as steps: still exact
    incremental, cache = decode_in_pieces(model, ids, [5, 9, 12, 13, 14, 15], 5, cache)
    torch.testing.assert_close(incremental, model(ids, 5).logits, rtol=0, atol=1e-4)


def test_mla_caches_one_latent_and_one_shared_rope_key_per_token():
    mla, gqa = tiny_model(**MLA), tiny_model(n_kv_heads=None)
    ids = torch.randint(0, 64, (3, 10))
    cache = mla(ids, 4, use_cache=True).past_key_values
    for latent, rope_key in cache.layers.values():
        assert latent.shape == (3, 1, 10, 12) and rope_key.shape == (3, 1, 10, 4)
    slots = len(cache)
    assert cache.nbytes() == slots * 3 * 10 * (12 + 4) * 4  # fp32, no headroom after prefill
    full = gqa(ids, 4, use_cache=True).past_key_values.nbytes()
    assert full == slots * 3 * 10 * 2 * 4 * 8 * 4  # k and v, 4 heads of 8
    assert cache.nbytes() < full / 3


def test_mla_cache_with_exits_and_compression_decodes():
    model = tiny_model(**MLA, injection="lti", state_init="embed")
    ids = torch.randint(0, 64, (2, 4))
    adaptive = model.generate(ids, 6, 12, exit_criterion="latent-diff", exit_threshold=0.05)
    compressed = model.generate(ids, 6, 8, cache=KVCache(core_slots=2))
    assert adaptive.shape == compressed.shape == (2, 10)


# --- mixture of experts -----------------------------------------------------------------------

def reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token: the chosen experts' SwiGLUs weighted by their gates, plus the shared."""
    flat = x.reshape(-1, x.shape[-1])
    chosen, gates, _ = moe.route(flat)
    rows = []
    for token, experts, weights in zip(flat, chosen, gates):
        y = moe.shared(token) if moe.shared is not None else torch.zeros_like(token)
        for e, g in zip(experts.tolist(), weights):
            gate, up = (moe.gate_up[e] @ token).chunk(2)
            y = y + g * (moe.down[e] @ (F.silu(gate) * up))
        rows.append(y)
    return torch.stack(rows).view_as(x)


@pytest.mark.parametrize("balance", ["aux-free", "aux-loss"])
def test_moe_dispatch_equals_routing_token_by_token(balance):
    model = tiny_model(**MOE, moe_balance=balance)
    moe = model.backbone.core.blocks[0].mlp
    moe.bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1]))  # selection bias in play
    x = torch.randn(2, 7, 32)
    ctx = model.backbone.context(2, 7, x.device)
    torch.testing.assert_close(moe(x, ctx), reference_moe(moe, x), rtol=1e-5, atol=1e-5)


def test_grouped_matmul_equals_one_matmul_per_expert_with_gradients():
    x = torch.randn(12, 16, requires_grad=True)
    w = torch.randn(3, 8, 16, requires_grad=True)
    offsets = torch.tensor([5, 5, 12], dtype=torch.int32)  # the second expert gets no token
    results = []
    for grouped in (True, False):
        x.grad = w.grad = None
        y = expert_matmul(x, w, offsets, grouped=grouped)
        (y * torch.arange(8.0)).sum().backward()
        results.append((y.detach(), x.grad.clone(), w.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("balance", ["aux-free", "aux-loss"])
def test_moe_cached_decoding_is_exact_and_tokens_do_not_affect_each_other(balance):
    model = tiny_model(**MOE, moe_balance=balance)
    ids = torch.randint(0, 64, (2, 14))
    full = model(ids, 4).logits
    incremental, _ = decode_in_pieces(model, ids, [6, 10, 11, 12, 13], 4)
    torch.testing.assert_close(incremental, full, rtol=0, atol=1e-4)
    # No capacity limit, so no token is dropped: a sequence alone routes as in the batch.
    torch.testing.assert_close(model(ids[:1], 4).logits, full[:1], rtol=0, atol=1e-5)


def moe_step_loads(model):
    return torch.stack([m.load for m in model.modules() if isinstance(m, MoE)])


def test_moe_load_is_counted_per_thinking_step_in_training_only():
    model = tiny_model(**MOE, max_step_embeddings=8)
    ids = torch.randint(0, 64, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0  # left padding is not routed load
    model(ids, 3, attention_mask=mask)
    assert moe_step_loads(model).sum() == 0  # eval mode counts nothing
    model.train()
    model(ids, 3, attention_mask=mask)
    core = model.backbone.core.blocks[0].mlp
    # 16 real tokens x 2 experts at each of the 3 steps, none at later steps.
    assert core.load.sum(-1).tolist() == [32.0] * 3 + [0.0] * 5
    stats = update_balance(model)
    assert len(stats["moe_load_by_step"]) == 3 and stats["moe_load"] >= 1.0
    assert moe_step_loads(model).sum() == 0  # cleared for the next update


def skew_routers(model, ids, logit=3.0):
    """Make expert 0 the favourite: its router row gains `logit` along the mean input."""
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs.update({m: args[0]}))
             for m in model.modules() if isinstance(m, MoE)]
    with torch.no_grad():
        model.eval()(ids, 2)
        for m, x in inputs.items():
            mean = x.reshape(-1, x.shape[-1]).mean(0)
            m.router.weight[0] += logit * mean / mean.pow(2).sum()
    for hook in hooks:
        hook.remove()
    model.train()


def test_aux_free_bias_moves_load_toward_uniform():
    """With the weights fixed, only the selection bias moves: the busiest expert loses load."""
    model = tiny_model(**MOE, moe_bias_rate=0.05)
    ids = torch.randint(0, 64, (8, 16))
    skew_routers(model, ids)
    core = model.backbone.core.blocks[0].mlp
    ratios = []
    for _ in range(40):
        model(ids, 2)
        ratios.append(update_balance(model)["moe_load"])
    assert core.bias[0] < 0 and core.bias.abs().sum() > 0
    assert ratios[0] > 1.3 and ratios[-1] < 0.8 * ratios[0], ratios


def test_the_balance_state_stays_fp32_in_a_bf16_model():
    model = tiny_model(**MOE).to(torch.bfloat16).train()
    core = model.backbone.core.blocks[0].mlp
    core.bias.fill_(0.75)  # bf16 spacing here is 2**-7: a 0.001 step would vanish
    model(torch.randint(0, 64, (2, 8)), 2)
    update_balance(model)
    assert core.bias.dtype == core.load.dtype == torch.float32
    assert float((core.bias - 0.75).abs().max()) == pytest.approx(0.001, abs=1e-6)


def test_aux_loss_reaches_the_router_and_balances_it():
    model = tiny_model(**MOE, moe_balance="aux-loss", moe_aux_weight=1.0)
    ids = torch.randint(0, 64, (8, 16))
    skew_routers(model, ids)
    routers = [m.router.weight for m in model.modules() if isinstance(m, MoE)]
    optimizer = torch.optim.SGD(routers, lr=20.0)
    ratios = []
    for _ in range(30):
        optimizer.zero_grad()
        out = model(ids, 2)
        out.aux_loss.backward()
        optimizer.step()
        ratios.append(update_balance(model)["moe_load"])
    assert ratios[0] > 1.3 and ratios[-1] < 0.8 * ratios[0], ratios
    model.eval()
    assert model(ids, 2).aux_loss is None  # only training pays for balance


def test_trainer_moves_the_bias_and_logs_load_per_step(tmp_path):
    from test_train import SMALL_GRAPH, small_config
    from loopformer.training.trainer import Trainer

    cfg = SMALL_GRAPH.replace(**MOE, **MLA, step_lora_rank=2)
    trainer = Trainer(cfg, small_config(updates=3, eval_every=3), tmp_path, progress=False)
    trainer.fit()
    biases = [m.bias for m in trainer.model.modules() if isinstance(m, MoE)]
    assert all(b.abs().sum() > 0 for b in biases)  # OpenMythos never moves it
    import json
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(len(r["moe_load_by_step"]) == r["num_steps"] for r in records)
    assert all(r["moe_load"] >= 1.0 for r in records)


def test_active_parameters_count_k_of_n_routed_experts():
    model = tiny_model(**MOE)
    experts = sum(m.gate_up.numel() + m.down.numel() for m in model.modules()
                  if isinstance(m, MoE))
    assert model.num_parameters() - model.num_parameters(active=True) == experts // 2


# --- per-step LoRA ----------------------------------------------------------------------------

def test_lora_starts_equal_to_the_tied_model_and_loads_its_checkpoint(tmp_path):
    tied = tiny_model(injection="lti", state_init="embed")
    tied.save_pretrained(tmp_path)
    adapted = LoopLM.from_pretrained(tmp_path, step_lora_rank=4)
    assert adapted.cfg.step_lora_rank == 4
    # Adapters only add parameters: every tied name is there, unchanged.
    names = dict(adapted.named_parameters())
    for name, p in tied.named_parameters():
        assert torch.equal(names[name], p), name
    assert any(name.endswith("lora_a") for name in names)
    ids = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(adapted(ids, 6).logits, tied(ids, 6).logits, rtol=0, atol=0)
    randomise_adapters(adapted)
    assert not torch.allclose(adapted(ids, 6).logits, tied(ids, 6).logits, atol=1e-3)


def test_steps_beyond_the_adapter_table_reuse_its_last_adapter():
    """A table of 4 adapters run 16 steps (4x) equals a table of 16 whose rows 4-15 copy row 3."""
    short = tiny_model(step_lora_rank=2, max_step_embeddings=4, step_embedding="none")
    randomise_adapters(short)
    long = LoopLM(tiny_config(step_lora_rank=2, max_step_embeddings=16,
                              step_embedding="none")).eval()
    state = {k: v[torch.arange(16).clamp(max=3)] if k.endswith(("lora_a", "lora_b")) else v
             for k, v in short.state_dict().items()}
    long.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(long(ids, 16).logits, short(ids, 16).logits, rtol=0, atol=1e-5)
    # and the steps really differ: the same model with one adapter for every step does not match
    one = {k: v[torch.zeros(16, dtype=torch.long)] if k.endswith(("lora_a", "lora_b")) else v
           for k, v in short.state_dict().items()}
    long.load_state_dict(one)
    assert not torch.allclose(long(ids, 16).logits, short(ids, 16).logits, atol=1e-3)


def test_lora_cached_decoding_is_exact():
    model = tiny_model(step_lora_rank=2, **MLA)
    randomise_adapters(model)
    ids = torch.randint(0, 64, (2, 12))
    incremental, _ = decode_in_pieces(model, ids, [5, 9, 10, 11], 6)
    torch.testing.assert_close(incremental, model(ids, 6).logits, rtol=0, atol=1e-4)


# --- presets ----------------------------------------------------------------------------------

def test_full_size_presets_build_and_report_active_parameters():
    with torch.device("meta"):
        mythos = LoopLM(ModelConfig.from_preset("openmythos"))
        moeut = LoopLM(ModelConfig.from_preset("moeut-small"))
    cfg = mythos.cfg
    assert (cfg.attention, cfg.ffn, cfg.injection, cfg.halting) == ("mla", "moe", "lti", "act")
    assert cfg.step_lora_rank == 16 and cfg.n_experts == 64 and cfg.kv_lora_rank == 512
    assert 1.0e9 < mythos.num_parameters() < 1.4e9
    assert mythos.num_parameters(active=True) < mythos.num_parameters() / 4
    assert moeut.num_parameters(active=True) < moeut.num_parameters()


@pytest.mark.parametrize("preset", sorted(SCALED_DOWN))
def test_presets_train_and_decode_with_the_cache(preset):
    torch.manual_seed(0)
    model = LoopLM(ModelConfig.from_preset(preset, **SCALED_DOWN[preset])).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 64, (4, 24))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        out = model(ids, (2, 2), labels=ids)
        loss = out.loss + (out.aux_loss if out.aux_loss is not None else 0)
        loss.backward()
        optimizer.step()
        update_balance(model)
        losses.append(out.loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("mlp.bias") for k in changed)  # the aux-free selection bias moved
    assert any(k.endswith("lora_b") for k in changed) == bool(model.cfg.step_lora_rank)
    model.eval()
    incremental, _ = decode_in_pieces(model, ids[:, :12], [6, 9, 10, 11], 4)
    torch.testing.assert_close(incremental, model(ids[:, :12], 4).logits, rtol=0, atol=1e-4)
    assert model.generate(ids[:, :6], 4, 4).shape == (4, 10)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_runs_in_bf16_close_to_fp32(variant):
    model = build_variant(variant)
    ids = torch.randint(0, 64, (2, 10))
    reference = model(ids, 3).logits
    bf16 = model.to(torch.bfloat16)(ids, 3).logits
    assert bf16.dtype == torch.bfloat16
    assert ((bf16.float() - reference).norm() / reference.norm()) < 0.05
