import pytest
import torch

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
