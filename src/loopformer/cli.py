"""The `loopformer` command. Subcommands and their flags are derived by tyro from signatures."""

from __future__ import annotations

import sys
import time
from typing import Literal

import torch
import tyro

from .config import ModelConfig
from .lm import LoopLM


def demo(preset: str = "tiny", injection: Literal["add", "concat", "lti", "gated"] = "concat",
         steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64), prompt_len: int = 12,
         seed: int = 0) -> None:
    """Build a model and show how its output changes with the number of core steps."""
    torch.manual_seed(seed)
    state_init = "embed" if injection in ("gated", "lti") else "zeros"
    cfg = ModelConfig.from_preset(preset, injection=injection, state_init=state_init)
    model = LoopLM(cfg).eval()
    print(f"loopformer demo: preset={preset} injection={injection} "
          f"params={model.num_parameters():,} spectral_radius={model.spectral_radius()}")
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len))
    print(f"{'steps':>6} {'ms/forward':>11} {'|dlogits|/|logits|':>19}  greedy continuation")
    previous = None
    with torch.no_grad():
        for num_steps in steps:
            start = time.perf_counter()
            logits = model(prompt, num_steps).logits
            ms = 1e3 * (time.perf_counter() - start)
            change = "" if previous is None else \
                f"{float((logits - previous).norm() / previous.norm()):.2e}"
            tokens = model.generate(prompt, max_new_tokens=8, num_steps=num_steps)
            print(f"{num_steps:>6} {ms:>11.1f} {change:>19}  {tokens[0, prompt_len:].tolist()}")
            previous = logits
    print("Same weights, same prompt: only num_steps, chosen at call time, changed the output.")


COMMANDS = {"demo": demo}


def main(argv: list[str] | None = None) -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="loopformer")
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"loopformer: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
