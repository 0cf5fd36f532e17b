"""The commands for language-model runs (task "text"): perplexity by thinking steps,
generation, and export to a Hugging Face folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import torch
from tyro.conf import Positional

from .files import write_json_atomic


def perplexity(run_dir: Positional[Path], steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
               examples: int | None = None) -> None:
    """Validation perplexity of a text run by thinking steps; writes DIR/perplexity.json and
    DIR/perplexity.png.

    Args:
        steps: core steps to evaluate at.
        examples: validation windows (default: the run's eval_examples).
    """
    from .evaluation.plotting import plot_perplexity
    from .training.run import load_text_run
    from .training.sources import TokenSource

    if not steps or min(steps) < 1:
        raise ValueError(f"--steps needs integers >= 1, got {steps}")
    model, _, model_cfg, train_cfg = load_text_run(run_dir)
    if examples is not None:
        if examples < 1:
            raise ValueError(f"--examples must be >= 1, got {examples}")
        train_cfg = train_cfg.replace(eval_examples=examples)
    source = TokenSource(train_cfg, model_cfg, run_dir)
    source.open(run_dir)
    start = time.perf_counter()
    with torch.no_grad():
        values = [source.evaluate(model, s)["val_ppl"] for s in steps]
    write_json_atomic(Path(run_dir) / "perplexity.json",
                      {"steps": list(steps), "perplexity": values})
    plot_perplexity(Path(run_dir) / "perplexity.png", list(steps), values, str(run_dir))
    windows = min(len(source.val), train_cfg.eval_examples)
    print(f"validation perplexity by thinking steps ({windows} windows of {source.seq_len} "
          f"tokens; trained with mean depth {train_cfg.depth_mean})")
    for s, value in zip(steps, values):
        print(f"{s:>6} {value:>10.3f}")
    print(f"wrote {Path(run_dir) / 'perplexity.json'} and perplexity.png in "
          f"{time.perf_counter() - start:.0f}s")


def generate(run_dir: Positional[Path], prompt: str = "", max_new_tokens: int = 64,
             steps: int | None = None, exit_criterion: str | None = None,
             exit_threshold: float | None = None, temperature: float = 0.0,
             top_p: float | None = None, seed: int = 0) -> None:
    """Continue a prompt with a text run, streaming the tokens as they come.

    Args:
        steps: core steps per token (the maximum with an exit criterion; default: the
            model's mean_steps).
        temperature: 0 = greedy; above 0 samples.
    """
    from .training.run import load_text_run

    model, tokenizer, _, _ = load_text_run(run_dir)
    lm = model.lm
    ids = tokenizer.encode(prompt).ids or [lm.cfg.vocab_size - 1]
    room = lm.cfg.max_seq_len - len(ids)
    if room < 1:
        raise ValueError(f"the prompt is {len(ids)} tokens; the model reads at most "
                         f"{lm.cfg.max_seq_len - 1}: shorten it")
    new, spent = [], []
    printed = ""

    def stream(token: torch.Tensor, token_steps: torch.Tensor) -> None:
        nonlocal printed
        new.append(int(token[0]))
        spent.append(int(token_steps[0]))
        text = tokenizer.decode(new)
        sys.stdout.write(text[len(printed):])
        sys.stdout.flush()
        printed = text

    sys.stdout.write(prompt)
    start = time.perf_counter()
    lm.generate(torch.tensor([ids]), min(max_new_tokens, room), steps,
                do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p,
                exit_criterion=exit_criterion, exit_threshold=exit_threshold,
                generator=torch.Generator().manual_seed(seed), streamer=stream)
    seconds = time.perf_counter() - start
    print(f"\n[{len(new)} tokens, {len(new) / seconds:.1f} tokens/s, "
          f"{sum(spent) / max(1, len(spent)):.2f} core steps per token]")


def export(run_dir: Positional[Path], hf: Path, dtype: Literal["float32", "bfloat16"] =
           "float32") -> None:
    """Write a text run as a Hugging Face folder: the model (`import loopformer.hf`, then
    AutoModelForCausalLM) and its tokenizer (AutoTokenizer).

    Args:
        hf: the folder to write.
    """
    try:
        from transformers import PreTrainedTokenizerFast

        from .hf import LoopConfig, LoopForCausalLM
    except ImportError:
        raise ValueError("export needs transformers: pip install 'loopformer[hf]'") from None
    from .data.tokenizer import END_OF_TEXT
    from .training.run import load_text_run

    text_model, tokenizer, model_cfg, _ = load_text_run(run_dir)
    model = LoopForCausalLM(LoopConfig(**model_cfg.to_dict(),
                                       eos_token_id=tokenizer.token_to_id(END_OF_TEXT)))
    model.model.load_state_dict(text_model.lm.state_dict())
    model.to(getattr(torch, dtype)).save_pretrained(hf)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT).save_pretrained(hf)
    print(f"wrote {hf}: `import loopformer.hf` then AutoModelForCausalLM.from_pretrained and "
          "AutoTokenizer.from_pretrained read it")
