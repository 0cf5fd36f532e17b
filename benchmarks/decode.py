"""Greedy cached decoding against the compute floor: eager and compiled tokens/s, prefill
tokens/s and cache memory at batch 1 and 16, short and 1,024-token contexts.

    python -m benchmarks.decode
    python -m benchmarks.decode --huginn DIR          # Huginn's own code beside it
    python -m benchmarks.decode --before /tmp/before/src   # an older tree beside it

The model is issue 17's tiny config (random weights: speed does not depend on training).
`model.generate(...)` is timed as a user calls it, eagerly and with `compile=True`, in turns
(eager, compiled, eager, ...) so that the machine's drift hits both alike. The compute floor is
the FLOPs of one decoded token (torch's FlopCounterMode, at the middle of the generated span)
divided by the fp32 matmul peak sampled beside the run: what a token would cost if every FLOP
ran at the speed of one large matmul.

`--huginn DIR`: a folder holding Huginn's modeling files `raven_modeling_minimal.py` and
`raven_config_minimal.py` (from the model repository tomg-group-umd/huginn-0125 or GitHub
seal-rg/recurrent-pretraining; nothing is downloaded here). The same shape is built with its
classes and timed through transformers' `generate` with its own cache, in the same turns.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from loopformer import KVCache, LoopLM, ModelConfig
from loopformer.flops import count_flops

from .common import print_table
from .suite import MatmulPeak

# Issue 17's config: d 256, 8 heads, 1 prelude / 1 core / 1 coda block, sandwich norm,
# SwiGLU 704, 8 thinking steps, vocab 512 (2.67M parameters).
CONFIG = ModelConfig(vocab_size=512, d_model=256, n_heads=8, ffn_hidden=704, n_prelude=1,
                     n_core=1, n_coda=1, norm="sandwich", injection="concat", mean_steps=8,
                     max_seq_len=1280)
CASES = ((1, 32), (16, 32), (1, 1024), (16, 1024))  # (batch, prompt tokens)


def timed(fn) -> float:
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def flops_per_token(model: LoopLM, prompt: torch.Tensor, new: int, steps: int) -> float:
    """FLOPs of decoding one token per row after prompt + new/2 cached tokens, per token."""
    batch = prompt.shape[0]
    context = torch.cat((prompt, prompt[:, :1].expand(batch, new // 2)), dim=1)
    with torch.no_grad():
        cache = model(context, steps, use_cache=True).past_key_values
    # Counted with autograd on: torch's module tracker inside FlopCounterMode fails under
    # no_grad on a model with a learned step table (the forward's FLOPs are the same).
    flops = count_flops(lambda: model(prompt[:, :1], steps, past_key_values=cache))
    return flops["total"] / batch


def run_case(models: dict, batch: int, prompt_len: int, new: int, steps: int,
             repeats: int, peak: MatmulPeak, others: dict | None = None) -> dict:
    """One row: `models["eager"]` and `models["compiled"]` (LoopLMs) through generate, and
    each of `others` (name -> generate(prompt, new, steps)), timed in turns."""
    generator = torch.Generator().manual_seed(batch * 10_000 + prompt_len)
    eager = models["eager"]
    prompt = torch.randint(0, CONFIG.vocab_size, (batch, prompt_len), generator=generator
                           ).to(eager.embed.weight.device)
    calls = {
        "eager": lambda: eager.generate(prompt, new, steps),
        "compiled": lambda: models["compiled"].generate(prompt, new, steps, compile=True),
        **{name: (lambda fn=fn: fn(prompt, new, steps)) for name, fn in (others or {}).items()},
    }
    reference = eager.generate(prompt, new, steps)
    row = {"batch": batch, "context": f"{prompt_len}+{new}"}
    compile_s = timed(calls["compiled"])  # the first compiled call compiles this shape
    row["same tokens"] = "yes" if torch.equal(calls["compiled"](), reference) else "NO"
    times = {name: [] for name in calls}
    for call in calls.values():  # warm-up (the other decoders' first calls, compilation)
        call()
    graphs = compiled_graphs()
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
    row["graphs compiled while timed"] = compiled_graphs() - graphs
    for name, samples in times.items():
        row[f"{name} tok/s"] = batch * new / statistics.median(samples)
        if name not in ("eager", "compiled"):
            row[f"compiled / {name}"] = row["compiled tok/s"] / row[f"{name} tok/s"]
    row["compile s"] = compile_s
    with torch.no_grad():
        for name in ("eager", "compiled"):
            prefill = lambda: models[name](prompt, steps, use_cache=True)
            prefill()
            row[f"prefill {name} tok/s"] = batch * prompt_len / statistics.median(
                timed(prefill) for _ in range(repeats))
    cache = KVCache()
    eager.generate(prompt, new, steps, cache=cache)
    row["cache MB"] = cache.nbytes() / 2**20
    peak.rate()
    row["MFLOP/token"] = flops_per_token(eager, prompt, new, steps) / 1e6
    floor = peak.rate() / (row["MFLOP/token"] * 1e6)
    row["floor tok/s"] = floor
    row["compiled / floor"] = row["compiled tok/s"] / floor
    return row


def before_generators(src: str, like: LoopLM) -> dict:
    """An older loopformer tree's generate, eager and after compile_regions, on `like`'s
    weights (imported as a renamed package, as benchmarks.versions does)."""
    from .versions import import_old

    old = import_old(Path(src))
    models = {}
    for name in ("before eager", "before compiled"):
        model = old.LoopLM(old.ModelConfig(**like.cfg.to_dict())).eval()
        model.load_state_dict(like.state_dict())
        models[name] = model.to(like.embed.weight.device)
    models["before compiled"].compile_regions()
    return {name: model.generate for name, model in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=CONFIG.mean_steps)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cases", default=",".join(f"{b}x{p}" for b, p in CASES),
                        help="BATCHxPROMPT,... (default: %(default)s)")
    parser.add_argument("--huginn", default=None, metavar="DIR",
                        help="folder with raven_modeling_minimal.py and raven_config_minimal.py")
    parser.add_argument("--before", default=None, metavar="SRC",
                        help="an older tree's src/ folder (git worktree add /tmp/before REV)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = LoopLM(CONFIG).eval().to(args.device)
    models = {"eager": eager, "compiled": copy.deepcopy(eager)}
    others = {}
    if args.huginn:
        from .huginn import huginn_generate

        others["huginn"] = huginn_generate(args.huginn, eager)
    if args.before:
        others.update(before_generators(args.before, eager))
    peak = MatmulPeak(device=args.device)
    rows = []
    for case in args.cases.split(","):
        batch, prompt_len = (int(n) for n in case.split("x"))
        rows.append(run_case(models, batch, prompt_len, args.new_tokens, args.steps,
                             args.repeats, peak, others))
        print(f"  {case}: done", flush=True)
    print(f"\ngreedy decoding, {eager.num_parameters():,} parameters, {args.steps} thinking "
          f"steps, {args.new_tokens} new tokens, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeats (median), {args.device}; fp32 matmul peak "
          f"{statistics.median(peak.samples) / 1e9:.1f} GFLOP/s (median of the samples)")
    columns = ["batch", "context", "eager tok/s", "compiled tok/s",
               *(f"{name} tok/s" for name in others),
               *(f"compiled / {name}" for name in others), "prefill eager tok/s",
               "prefill compiled tok/s",
               "cache MB", "MFLOP/token", "floor tok/s", "compiled / floor", "compile s",
               "graphs compiled while timed", "same tokens"]
    print_table(rows, [c for c in columns if any(c in row for row in rows)])


if __name__ == "__main__":
    main()
