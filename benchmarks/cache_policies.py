"""Perplexity of a trained text run under each KV-cache policy, decoding token by token.

Every validation window is fed one token per call with the cache, so that each token's core
steps attend to what the policy kept of the earlier tokens: every step's entries (exact), N
slots (compress-sN), only each token's last step (last-step: Ouro's "last-loop" reuse) or
only its first (first-step), and the latest fallback under the `kl` exit. The full forward
pass without a cache is the reference.

    python -m benchmarks.cache_policies runs/text-quick --steps 4 8 --windows 8
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from loopformer import KVCache

from .common import print_table, text_run_windows

POLICIES = ("exact", "compress-s4", "compress-s2", "last-step", "first-step")


@torch.no_grad()
def cached_loss(lm, windows: torch.Tensor, steps: int, policy: str | None,
                exit_criterion: str | None = None) -> tuple[float, float]:
    """Mean next-token loss and mean core steps per token when decoding with the policy's
    cache; policy None: one full forward pass without a cache."""
    ids, labels = windows[:, :-1], windows[:, 1:]
    if policy is None:
        logits = lm(ids, steps, generator=torch.Generator().manual_seed(0)).logits
        return float(F.cross_entropy(logits.flatten(0, 1), labels.flatten())), float(steps)
    cache, losses, spent = KVCache.policy(policy), [], []
    generator = torch.Generator().manual_seed(0)  # the same noise draws for every policy
    for t in range(ids.shape[1]):
        out = lm(ids[:, t:t + 1], steps, past_key_values=cache, use_cache=True,
                 generator=generator, exit_criterion=exit_criterion)
        losses.append(F.cross_entropy(out.logits[:, -1], labels[:, t], reduction="none"))
        spent.append(out.steps.float().mean())
    return float(torch.stack(losses).mean()), float(torch.stack(spent).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, train_cfg, windows = text_run_windows(args.run, args.windows)
    print(f"{args.run}: {len(windows)} validation windows of {windows.shape[1] - 1} tokens, "
          f"decoded one token per call; trained with mean depth {train_cfg.depth_mean}")
    rows = []
    for steps in args.steps:
        settings = [("no cache (full forward)", None, None)] + \
            [(p, p, None) for p in POLICIES] + [("latest + kl exit", "latest", "kl")]
        for name, policy, criterion in settings:
            start = time.perf_counter()
            loss, spent = cached_loss(model.lm, windows, steps, policy, criterion)
            rows.append({"steps": steps, "cache": name, "perplexity": math.exp(loss),
                         "steps/token": spent, "seconds": time.perf_counter() - start})
            print(f"  {steps} steps, {name}: perplexity {math.exp(loss):.2f}", flush=True)
    print_table(rows, ["steps", "cache", "perplexity", "steps/token", "seconds"])


if __name__ == "__main__":
    main()
