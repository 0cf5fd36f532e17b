"""Hugging Face interop: AutoModelForCausalLM loads a LoopLM folder and its generate (with the
KV cache, through HF's GenerationMixin) returns exactly LoopLM.generate's tokens."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from conftest import tiny_model  # noqa: E402
from loopformer import LoopLM  # noqa: E402
from loopformer.hf import LoopConfig, LoopForCausalLM  # noqa: E402


def hf_model(lm: LoopLM) -> LoopForCausalLM:
    model = LoopForCausalLM(LoopConfig(**lm.cfg.to_dict()))
    model.model.load_state_dict(lm.state_dict())
    return model.eval()


def test_hf_generate_equals_looplm_generate_and_uses_the_cache():
    lm = tiny_model()
    model = hf_model(lm)
    ids = torch.randint(0, lm.cfg.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    lengths = []
    model.model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    out = model.generate(ids, max_new_tokens=8, do_sample=False, num_steps=3)
    assert torch.equal(out, lm.generate(ids, max_new_tokens=8, num_steps=3))
    assert lengths == [5] + [1] * 7  # the prefix once, then one new token per call
    # num_steps defaults to the config's mean_steps, as in LoopLM; exits pass through
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False),
                       lm.generate(ids, max_new_tokens=4))
    exits = dict(exit_criterion="kl", exit_threshold=1e-2)
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False, num_steps=8,
                                      **exits),
                       lm.generate(ids, max_new_tokens=6, num_steps=8, **exits))


def test_a_saved_folder_loads_in_both_worlds(tmp_path):
    lm = tiny_model(step_embedding="sinusoidal")  # buffers not saved with the weights
    hf_model(lm).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LoopConfig)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    plain = LoopLM.from_pretrained(tmp_path)
    ids = torch.randint(0, lm.cfg.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2))
    expected = lm.generate(ids, max_new_tokens=10, num_steps=4)
    assert torch.equal(auto.generate(ids, max_new_tokens=10, do_sample=False, num_steps=4),
                       expected)
    assert torch.equal(plain.generate(ids, max_new_tokens=10, num_steps=4), expected)

    lm.save_pretrained(tmp_path / "plain")  # and LoopLM's own folder opens in HF
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    assert torch.equal(again.generate(ids, max_new_tokens=10, do_sample=False, num_steps=4),
                       expected)


def test_an_invalid_config_is_refused():
    with pytest.raises(ValueError, match="ModelConfig.n_heads"):
        LoopConfig(d_model=30, n_heads=4).model_config()


def test_the_openmythos_variants_round_trip_through_hf(tmp_path):
    """MLA, MoE (its saved selection bias, its unsaved load counts) and per-step adapters."""
    from conftest import build_variant
    from loopformer.model.moe import MoE

    lm = build_variant("preset-openmythos")
    for m in lm.modules():
        if isinstance(m, MoE):
            m.bias.normal_()
    hf_model(lm).save_pretrained(tmp_path)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert all(m.load.abs().sum() == 0 for m in auto.modules() if isinstance(m, MoE))
    ids = torch.randint(0, lm.cfg.vocab_size, (1, 6), generator=torch.Generator().manual_seed(3))
    assert torch.equal(auto.generate(ids, max_new_tokens=6, do_sample=False, num_steps=4),
                       lm.generate(ids, max_new_tokens=6, num_steps=4))
