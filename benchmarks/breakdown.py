"""Where the reference training step spends its time (`python -m benchmarks.breakdown`).

Profiles a few steps (torch.profiler) and splits their CPU time into matrix multiplies,
attention, compiled fused kernels and every other op; the matmul and attention FLOPs come
from torch.utils.flop_counter, so each class gets its own rate against a matmul peak sampled
next to the profile. The profiler adds a little overhead per op, which inflates the small-op
classes: read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from loopformer import LoopLM

from .common import print_table
from .suite import REFERENCE, STEPS, MatmulPeak, batch_ids, step_flops, train_step_fn

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm"}


def op_class(name: str) -> str:
    if name in MATMUL_OPS:
        return "matrix multiplies"
    if "scaled_dot_product" in name:
        return "attention (SDPA)"
    if name.startswith("## Call CompiledFxGraph"):
        return "compiled fused kernels"
    return "other ops"


def flops_by_class(model: LoopLM, ids: torch.Tensor) -> dict[str, int]:
    totals: dict[str, int] = {}
    for op, flops in step_flops(model, ids, STEPS).items():
        if op != "total":
            kind = op_class(op.replace("aten.", "aten::", 1))
            totals[kind] = totals.get(kind, 0) + flops
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description="time split of the reference training step")
    parser.add_argument("--compile", action="store_true", help="profile compile_regions()")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = LoopLM(REFERENCE)
    ids = batch_ids(REFERENCE)
    flops = flops_by_class(model, ids)
    if args.compile:
        model.compile_regions()
    step = train_step_fn(model, ids, STEPS)
    for _ in range(3):  # warm-up (and compilation)
        step()
    peak = MatmulPeak()
    peak.rate()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    peak.rate()
    peak_rate = statistics.mean(peak.samples)
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        kind = op_class(event.key)
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total / 1e6 / args.steps
    total = sum(seconds.values())
    rows = []
    for kind in ("matrix multiplies", "attention (SDPA)", "compiled fused kernels", "other ops"):
        if kind not in seconds:
            continue
        row = {"class": kind, "ms/step": 1e3 * seconds[kind],
               "share %": 100 * seconds[kind] / total}
        if kind in flops:
            row["GFLOP/step"] = flops[kind] / 1e9
            row["% of peak"] = 100 * flops[kind] / seconds[kind] / peak_rate
        rows.append(row)
    print(f"reference step{' (compile_regions)' if args.compile else ''}: fp32 matmul peak "
          f"{peak_rate / 1e9:.1f} GFLOP/s (mean of the samples before and after the profile)")
    print_table(rows, ["class", "ms/step", "share %", "GFLOP/step", "% of peak"])


if __name__ == "__main__":
    main()
