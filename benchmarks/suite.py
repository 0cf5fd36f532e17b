"""The benchmark suite (`python -m benchmarks`): prints tables and writes JSON.

Measured side by side in one run: the machine's fp32 matmul peak; training tokens/s and
achieved FLOP/s of the reference config (FLOPs counted by torch.utils.flop_counter) as a
fraction of that peak; the recurrence overhead against an untied transformer of the same
depth and FLOPs; training memory at 64 steps with and without truncated backprop against 8
steps; bf16 autocast against fp32; prefill and decode tokens/s with and without the KV cache.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from loopformer import LoopLM, ModelConfig
from loopformer.flops import count_flops
from loopformer.memory import saved_tensor_bytes

from .common import print_table

# The reference config of the performance issue.
REFERENCE = ModelConfig(vocab_size=4096, d_model=256, n_heads=8, n_kv_heads=2, n_prelude=1,
                        n_core=2, n_coda=1, injection="concat", max_seq_len=512, mean_steps=8)
BATCH, SEQ, STEPS = 8, 128, 8


PEAK_SIZE = 2048


class MatmulPeak:
    """The machine's fp32 matmul rate, sampled by one large square matmul at a time.

    The shared machine's speed drifts by +-30% within seconds, so a fraction of "the" peak
    measured once is mostly noise; `rate()` is called right before and after each timed step
    and the step is compared with the mean of the two.
    """

    def __init__(self, size: int = PEAK_SIZE, device: str = "cpu"):
        self.a, self.b = (torch.randn(size, size, device=device) for _ in range(2))
        self.flops = 2 * size**3
        self.samples: list[float] = []
        self.sync = torch.cuda.synchronize if self.a.is_cuda else lambda: None
        for _ in range(2):  # warm-up
            self.a @ self.b

    def rate(self) -> float:
        self.sync()
        start = time.perf_counter()
        self.a @ self.b
        self.sync()
        rate = self.flops / (time.perf_counter() - start)
        self.samples.append(rate)
        return rate

    def summary(self) -> dict:
        return {"median": statistics.median(self.samples), "min": min(self.samples),
                "max": max(self.samples), "samples": len(self.samples)}


def batch_ids(cfg: ModelConfig, batch=BATCH, seq=SEQ) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=generator)


def train_step_fn(model: LoopLM, ids: torch.Tensor, num_steps, bf16: bool = False):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the Trainer

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, num_steps, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def step_flops(model: LoopLM, ids: torch.Tensor, num_steps) -> dict[str, int]:
    """FLOPs of one forward + backward by op (loopformer.flops: attention included)."""
    counts = count_flops(lambda: model(ids, num_steps, labels=ids).loss.backward())
    model.zero_grad(set_to_none=True)
    return counts


@dataclass
class TrainingCase:
    name: str
    cfg: ModelConfig
    bf16: bool = False
    compile_regions: bool = False


def training_rows(cases: list[TrainingCase], repeats: int, peak: MatmulPeak) -> list[dict]:
    """Time every case's training step in turns (one step of each per round), each step
    between two peak samples. A case's "% of peak" is the median of its steps' fractions;
    ratios between cases ("overhead", "vs fp32") are medians of the per-round ratios, so the
    machine's drifts cancel out of them."""
    ids = batch_ids(cases[0].cfg)
    steps, flops, extras = [], [], []
    for case in cases:
        torch.manual_seed(0)
        model = LoopLM(case.cfg)
        counts = step_flops(model, ids, STEPS)
        flops.append(counts)
        steps.append(train_step_fn(model, ids, STEPS, case.bf16))
        extra = {}
        if case.compile_regions:
            model.compile_regions()
            start = time.perf_counter()
            steps[-1]()  # the first call compiles
            extra["compile s"] = time.perf_counter() - start
        extras.append(extra)
    for step in steps * 2:  # warm-up
        step()
    times = [[] for _ in cases]
    fractions = [[] for _ in cases]
    before = peak.rate()
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
            after = peak.rate()
            fractions[i].append(flops[i]["total"] / times[i][-1] / ((before + after) / 2))
            before = after
    rows = []
    for case, counts, extra, t_list, f_list in zip(cases, flops, extras, times, fractions):
        t = statistics.median(t_list)
        rows.append({"benchmark": case.name, **extra, "median ms": 1e3 * t,
                     "spread ms": f"{1e3 * min(t_list):.0f}-{1e3 * max(t_list):.0f}",
                     "tokens/s": ids.numel() / t, "GFLOP/step": counts["total"] / 1e9,
                     "attention GFLOP": (counts["total"] - counts.get("aten.mm", 0)) / 1e9,
                     "GFLOP/s": counts["total"] / t / 1e9,
                     "% of peak": 100 * statistics.median(f_list),
                     "% spread": f"{100 * min(f_list):.0f}-{100 * max(f_list):.0f}",
                     "_times": t_list})
    return rows


def pairwise_ratio(numerator: dict, denominator: dict) -> float:
    """Median over rounds of numerator time / denominator time."""
    pairs = zip(numerator["_times"], denominator["_times"])
    return statistics.median(a / b for a, b in pairs)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_rss_child(cfg_dict, num_steps, queue):
    # A fresh process per setting; the kernel's high-water mark is reset just before the step
    # (writing 5 to clear_refs), so the peak belongs to the training step alone.
    torch.set_num_threads(1)
    cfg = ModelConfig.from_dict(cfg_dict)
    model = LoopLM(cfg)
    ids = batch_ids(cfg)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    saved = saved_tensor_bytes(lambda: model(ids, num_steps, labels=ids).loss.backward())
    queue.put({"saved_MB": saved / 2**20, "rss_growth_MB": (_status_kb("VmHWM") - before) / 1024})


def memory_row(name: str, cfg: ModelConfig, num_steps) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss_child, args=(cfg.to_dict(), num_steps, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return {"benchmark": name, "activations MB": result["saved_MB"],
            "peak RSS growth MB": result["rss_growth_MB"]}


@torch.no_grad()
def decode_rows(cfg: ModelConfig, context: int, new: int, repeats: int,
                compile_regions: bool = False) -> list[dict]:
    """Prefill, cached decoding and decoding by recomputing the prefix, timed in turns: the
    speed-up is the median of each round's ratio, so drifts of the machine's speed cancel.
    compile_regions: the same with a compiled model (its warm-up round compiles)."""
    torch.manual_seed(0)
    model = LoopLM(cfg).eval()
    if compile_regions:
        model.compile_regions()
    prompt = batch_ids(cfg, 1, context)

    def prefill():
        return model(prompt, STEPS, use_cache=True)

    def cached():
        out = prefill()
        start = time.perf_counter()
        for _ in range(new):
            token = out.logits[:, -1:].argmax(-1)
            out = model(token, STEPS, past_key_values=out.past_key_values, use_cache=True)
        return (time.perf_counter() - start) / new

    def recompute():
        ids, start = prompt, time.perf_counter()
        for _ in range(new):
            ids = torch.cat((ids, model(ids, STEPS).logits[:, -1:].argmax(-1)), dim=1)
        return (time.perf_counter() - start) / new

    cached(), recompute()  # warm-up
    prefill_times, cached_times, recompute_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        prefill()
        prefill_times.append(time.perf_counter() - start)
        cached_times.append(cached())
        recompute_times.append(recompute())
    speedups = [r / c for r, c in zip(recompute_times, cached_times)]
    rows = []
    suffix = ", compile_regions()" if compile_regions else ""
    for name, times, tokens in [(f"prefill {context} tokens", prefill_times, context),
                                (f"decode with cache ({context} context)", cached_times, 1),
                                (f"decode recomputing the prefix ({context} context)",
                                 recompute_times, 1)]:
        t = statistics.median(times)
        rows.append({"benchmark": name + suffix, "median ms": 1e3 * t,
                     "spread ms": f"{1e3 * min(times):.1f}-{1e3 * max(times):.1f}",
                     "tokens/s": tokens / t})
    rows[2]["cache speed-up"] = statistics.median(speedups)
    rows[2]["speed-up spread"] = f"{min(speedups):.1f}-{max(speedups):.1f}"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="loopformer benchmark suite")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--compile", action="store_true",
                        help="also time training and decoding with compile_regions()")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = MatmulPeak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; fp32 matmul peak sampled next to "
          f"every training step ({PEAK_SIZE}^3)")

    cases = [TrainingCase(f"train reference ({STEPS} steps, fp32)", REFERENCE),
             TrainingCase("train untied transformer, same depth/FLOPs",
                          REFERENCE.replace(core="fixed", fixed_depth=STEPS)),
             TrainingCase("train reference, bf16 autocast", REFERENCE, bf16=True)]
    if args.compile:
        cases.append(TrainingCase("train reference, compile_regions()", REFERENCE,
                                  compile_regions=True))
    train_rows = training_rows(cases, args.repeats, peak)
    ref = train_rows[0]
    train_rows[1]["overhead"] = pairwise_ratio(ref, train_rows[1])
    for row in train_rows[2:]:
        row["vs fp32"] = pairwise_ratio(ref, row)
    for row in train_rows:
        del row["_times"]
    peak_stats = peak.summary()
    print("\ntraining step: batch 8 x 128 tokens, d 256, 8 heads / 2 kv, 1/2/1 blocks, steps "
          "of all rows timed in turns; "
          f"fp32 matmul peak median {peak_stats['median'] / 1e9:.1f} GFLOP/s "
          f"({peak_stats['min'] / 1e9:.0f}-{peak_stats['max'] / 1e9:.0f}, "
          f"{peak_stats['samples']} samples); % of peak: each step against the mean of the "
          "peak samples taken just before and after it (median, spread); overhead = looped / "
          "untied step time, vs fp32 = fp32 / this row's step time (medians of per-round "
          "ratios)")
    print_table(train_rows, ["benchmark", "median ms", "spread ms", "tokens/s", "GFLOP/step",
                             "attention GFLOP", "GFLOP/s", "% of peak", "% spread",
                             "overhead", "vs fp32", "compile s"])

    mem_rows = [memory_row("8 steps", REFERENCE, 8),
                memory_row("64 steps, truncated: backprop through last 8", REFERENCE, (56, 8)),
                memory_row("64 steps, full backprop", REFERENCE, 64)]
    base = mem_rows[0]["activations MB"]
    for row in mem_rows:
        row["vs 8 steps"] = row["activations MB"] / base
    print("\ntraining memory (activations saved for backward; peak RSS growth of a fresh process)")
    print_table(mem_rows, ["benchmark", "activations MB", "vs 8 steps", "peak RSS growth MB"])

    dec_rows = decode_rows(REFERENCE, 256, 32, args.repeats)
    if args.compile:
        dec_rows += decode_rows(REFERENCE, 256, 32, args.repeats, compile_regions=True)
    print(f"\ninference at {STEPS} steps, batch 1; 32 new tokens per round, rounds in turns")
    print_table(dec_rows, ["benchmark", "median ms", "spread ms", "tokens/s", "cache speed-up",
                           "speed-up spread"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"matmul_peak_flops": peak_stats, "torch": torch.__version__,
                                    "threads": torch.get_num_threads(), "training": train_rows,
                                    "memory": mem_rows, "inference": dec_rows}, indent=2))
    print(f"\nwrote {args.out}")

