"""Huginn's own modeling code, loaded from a folder the user points to, at a LoopLM's shape.

The files are not part of loopformer (nothing is downloaded): `raven_modeling_minimal.py` and
`raven_config_minimal.py` come from the model repository tomg-group-umd/huginn-0125 on the
Hugging Face hub or from GitHub seal-rg/recurrent-pretraining (recpre/).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import torch

from loopformer import LoopLM

PACKAGE = "huginn_modeling"


def load_huginn(folder: str | Path):
    """The modeling module, imported as a package so that its relative import works."""
    folder = Path(folder)
    missing = [name for name in ("raven_modeling_minimal.py", "raven_config_minimal.py")
               if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"--huginn {folder}: missing {', '.join(missing)} (see "
                         "benchmarks/huginn.py for where Huginn's files come from)")
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        raise SystemExit(
            f"Huginn's modeling file needs transformers < 5 (found {transformers.__version__}): "
            "its generate path slices its inputs with the cache_position that transformers 5 "
            "no longer passes. Run this benchmark in an environment with transformers 4.x "
            "(tested: 4.57.6) and loopformer installed.")
    if PACKAGE not in sys.modules:
        package = importlib.util.module_from_spec(
            importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True))
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.raven_modeling_minimal")


def huginn_generate(folder: str | Path, like: LoopLM):
    """A function (prompt, new_tokens, steps) -> tokens that decodes greedily with Huginn's
    RavenForCausalLM of `like`'s shape (random weights) through transformers' generate and
    Huginn's own cache."""
    modeling = load_huginn(folder)
    cfg = like.cfg
    if cfg.n_kv_heads not in (None, cfg.n_heads) or cfg.injection != "concat" \
            or cfg.norm != "sandwich":
        raise SystemExit("the Huginn comparison needs a LoopLM of Huginn's design: plain "
                         "multi-head attention, concat injection, sandwich norm")
    config = modeling.RavenConfig(
        n_embd=cfg.d_model, n_heads=cfg.n_heads,
        n_layers=cfg.n_prelude + cfg.n_core + cfg.n_coda, block_size=cfg.max_seq_len,
        vocab_size=cfg.vocab_size, intermediate_size=cfg.ffn_width,
        n_layers_in_prelude=cfg.n_prelude, n_layers_in_recurrent_block=cfg.n_core,
        n_layers_in_coda=cfg.n_coda, mean_recurrence=cfg.mean_steps, tie_embeddings=True)
    model = modeling.RavenForCausalLM(config).eval().to(like.embed.weight.device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # its own init is not implemented: give every weight a value
        for name, param in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator).to(param.device)
                            * cfg.init_std)

    def generate(prompt: torch.Tensor, new_tokens: int, steps: int) -> torch.Tensor:
        # An explicit mask: transformers would otherwise guess padding from pad_token_id.
        return model.generate(prompt, attention_mask=torch.ones_like(prompt),
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, num_steps=steps, use_cache=True,
                              pad_token_id=0)

    return generate
