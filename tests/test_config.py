import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loopformer import PRESETS, LoopLM, ModelConfig


@pytest.mark.parametrize("changes, field", [
    (dict(d_model=30, n_heads=4), "n_heads"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(n_kv_heads=0), "n_kv_heads"),
    (dict(injection="mystery"), "injection"),
    (dict(state_init="ones"), "state_init"),
    (dict(step_embedding="rotary"), "step_embedding"),
    (dict(norm="post"), "norm"),
    (dict(n_core=0), "n_core"),
    (dict(attention_window=0), "attention_window"),
    (dict(n_heads=0), "n_heads"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(mean_steps=0), "mean_steps"),
    (dict(n_prelude=-1), "n_prelude"),
    (dict(layer_scale_init=0.0), "layer_scale_init"),
    (dict(injection="gated", state_init="zeros"), "state_init"),
    (dict(d_model=24, n_heads=8), "n_heads"),  # head_dim 3 is odd: RoPE needs pairs
])
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(**changes)


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.from_preset("gpt-5")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"d_model": 64, "n_layers": 3})


def test_dict_round_trip():
    cfg = ModelConfig.from_preset("lm-10m", injection="lti", layer_scale_init=1e-4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name, low, high", [
    ("lm-10m", 8e6, 12e6),
    ("lm-100m", 85e6, 115e6),
    ("huginn-3.5b", 3.4e9, 3.7e9),  # Geiping et al. 2025 report 3.5B
])
def test_presets_build_on_meta_with_expected_size(name, low, high):
    with torch.device("meta"):
        model = LoopLM(PRESETS[name])
    assert low <= model.num_parameters() <= high
    assert all(p.device.type == "meta" for p in model.parameters())


def test_huginn_layout():
    cfg = PRESETS["huginn-3.5b"]
    assert (cfg.n_prelude, cfg.n_core, cfg.n_coda) == (2, 4, 2)
    assert (cfg.d_model, cfg.n_heads, cfg.vocab_size) == (5280, 55, 65536)
    assert (cfg.injection, cfg.norm) == ("concat", "sandwich")


@pytest.mark.parametrize("changes, message", [
    (dict(d_model=128.0), "ModelConfig.d_model must be an int, got 128.0"),
    (dict(causal="false"), "ModelConfig.causal must be true or false"),
    (dict(rope=1), "ModelConfig.rope must be true or false"),
    (dict(noise_std=float("nan")), "ModelConfig.noise_std must be a finite number"),
    (dict(rope_theta=float("inf")), "ModelConfig.rope_theta must be a finite number"),
    (dict(n_kv_heads=True), "ModelConfig.n_kv_heads must be an int or None"),
    (dict(vocab_size="256"), "ModelConfig.vocab_size must be an int"),
])
def test_a_value_of_the_wrong_type_names_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


# Values of every kind a config file or a fuzzer may hold, good and bad.
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
                      st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from(["add", "concat", "lti", "gated", "zeros", "embed", "noise",
                                       "none", "learned", "sinusoidal", "pre", "sandwich",
                                       "recurrent", "fixed", "act", "false", ""]))
FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=6))
def test_random_configs_build_a_working_model_or_raise_value_error(changes):
    base = dict(vocab_size=16, d_model=16, n_heads=2, n_prelude=1, n_core=1, n_coda=1,
                max_seq_len=8, mean_steps=2, fixed_depth=2, max_step_embeddings=4)
    try:
        cfg = ModelConfig(**{**base, **changes})
    except ValueError:
        return
    if cfg.d_model * cfg.ffn_width * (cfg.n_prelude + cfg.n_core * (
            cfg.fixed_depth if cfg.core == "fixed" else 1) + cfg.n_coda) > 5e6:
        return  # valid, but too large to build in a test
    model = LoopLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, min(4, cfg.max_seq_len)))
    with torch.no_grad():
        logits = model(ids, 2).logits
    assert logits.shape == (2, ids.shape[1], cfg.vocab_size)
    assert torch.isfinite(logits).all()
