"""Cached decoding of this tree against an older loopformer, in one process, in turns.

Whole-process benchmark runs drift by more than a few percent on a shared machine, so this
imports an older source tree as a renamed package (it must use relative imports only, as
0.1 does), builds the reference model in both with the same weights, and times a cached
token and self-speculative decoding of each in turns:

    git worktree add /tmp/before f8e89c8
    python -m benchmarks.versions --old-src /tmp/before/src --rounds 25 [--compile]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import loopformer

from .suite import REFERENCE, STEPS


def import_old(src: Path):
    home = Path(tempfile.mkdtemp())
    shutil.copytree(src / "loopformer", home / "loopformer_old")
    sys.path.insert(0, str(home))
    return importlib.import_module("loopformer_old")


def cached_token(model, prompt, new: int = 32) -> float:
    with torch.no_grad():
        out = model(prompt, STEPS, use_cache=True)
        start = time.perf_counter()
        for _ in range(new):
            out = model(out.logits[:, -1:].argmax(-1), STEPS, past_key_values=out.past_key_values,
                        use_cache=True)
        return (time.perf_counter() - start) / new


def speculative(model, prompt) -> float:
    start = time.perf_counter()
    model.generate_speculative(prompt[:, :64], 32, STEPS, draft_steps=4, draft_tokens=4)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-src", type=Path, required=True,
                        help="the src/ folder of the older tree")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    models = {}
    for name, package in (("before", import_old(args.old_src)), ("after", loopformer)):
        torch.manual_seed(0)
        model = package.LoopLM(package.ModelConfig.from_dict(REFERENCE.to_dict())).eval()
        if args.compile:
            model.compile_regions()
        models[name] = model
    weights = [m.state_dict().values() for m in models.values()]
    assert all(torch.equal(a, b) for a, b in zip(*weights)), "the versions' weights differ"
    prompt = torch.randint(0, REFERENCE.vocab_size, (1, 256),
                           generator=torch.Generator().manual_seed(0))
    for measure in (cached_token, speculative):
        for model in models.values():
            measure(model, prompt)  # warm-up (and compilation)
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                times[name].append(measure(model, prompt))
        ratios = [a / b for a, b in zip(times["after"], times["before"])]
        print(f"{measure.__name__} (compile={args.compile}): before "
              f"{1e3 * statistics.median(times['before']):.2f} ms, after "
              f"{1e3 * statistics.median(times['after']):.2f} ms; after/before per round: "
              f"median {statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
