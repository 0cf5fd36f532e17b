import pytest
import torch

from loopformer import LoopLM, ModelConfig

INJECTION_SETUPS = [
    dict(injection="add", state_init="zeros"),
    dict(injection="concat", state_init="zeros"),
    dict(injection="lti", state_init="embed"),
    dict(injection="gated", state_init="embed"),
]


def tiny_config(**overrides) -> ModelConfig:
    # A larger init than the default makes each step change the logits visibly, so tests that
    # compare outputs can tell one depth from another.
    base = dict(init_std=0.2, step_embedding="learned")
    base.update(overrides)
    return ModelConfig.from_preset("tiny", **base)


def tiny_model(seed: int = 0, **overrides) -> LoopLM:
    torch.manual_seed(seed)
    return LoopLM(tiny_config(**overrides)).eval()


# The seeds' other variants at test sizes (tests/test_variants.py), and the presets using them.
MLA = dict(attention="mla", n_kv_heads=None, kv_lora_rank=12, rope_head_dim=4, q_lora_rank=16)
MOE = dict(ffn="moe", n_experts=4, experts_per_token=2, n_shared_experts=1, expert_hidden=16)
SCALED_DOWN = {  # the presets' variant choices at test sizes
    "openmythos": dict(vocab_size=64, d_model=64, n_heads=4, q_lora_rank=32, kv_lora_rank=16,
                       rope_head_dim=8, n_experts=8, experts_per_token=2, expert_hidden=16,
                       step_lora_rank=4, max_seq_len=64),
    "moeut-small": dict(vocab_size=64, d_model=64, expert_hidden=16, max_seq_len=64),
}
VARIANTS = {"mla": MLA, "moe": MOE, "step-lora": dict(step_lora_rank=2, max_step_embeddings=8),
            **{f"preset-{name}": None for name in SCALED_DOWN}}


def randomise_adapters(model, seed=1):
    """Non-zero B in every per-step adapter, so that the adapters change the model."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("lora_b"):
            p.data = 0.3 * torch.randn(p.shape, generator=generator)


def build_variant(name, seed=0, **setup):
    """A model of one VARIANTS entry with `setup` changes, its adapters active."""
    torch.manual_seed(seed)
    if name.startswith("preset-"):
        preset = name.removeprefix("preset-")
        model = LoopLM(ModelConfig.from_preset(preset, **SCALED_DOWN[preset], **setup)).eval()
    else:
        model = LoopLM(tiny_config(**VARIANTS[name], **setup)).eval()
    randomise_adapters(model)
    return model


def decode_in_pieces(model, ids, cuts, num_steps, cache=None):
    """Logits of `ids` decoded with a KV cache in pieces ending at `cuts`, and the cache."""
    out, pieces, start = None, [], 0
    for end in [*cuts, ids.shape[1]]:
        out = model(ids[:, start:end], num_steps, use_cache=True,
                    past_key_values=out.past_key_values if out else cache)
        pieces.append(out.logits)
        start = end
    return torch.cat(pieces, dim=1), out.past_key_values


@pytest.fixture(params=INJECTION_SETUPS, ids=lambda d: d["injection"])
def injection_setup(request):
    return request.param


class CompileCounter:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    def __init__(self):
        self.count = 0

    def __call__(self, graph_module, example_inputs):
        self.count += 1
        return graph_module.forward
