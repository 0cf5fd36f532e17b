"""Bytes communicated per FLOP in data-parallel training: a looped model against standard
(untied) transformers of equal parameters and of equal FLOPs per token, with DDP and FSDP2.

    python -m benchmarks.comm [--updates 3] [--json FILE]

Part 1 measures. Each model trains a few updates on 2 CPU processes (gloo), set up by the
library's own `parallelize` (FSDP2 keeps the looped core gathered across the loop). The bytes
are those of the collectives the profiler records (gloo:all_gather / gloo:all_reduce with their
input shapes and dtypes), not a formula; the FLOPs are FlopCounterMode's count of one
process's forward and backward.

Part 2 extrapolates on paper to 1B- and 8B-parameter models: parameter counts and FLOPs per
token are counted exactly on the meta device; the bytes follow the per-update formulas that
part 1 checks against its measurements; the time is that of a stated accelerator and link,
with no overlap of communication and compute.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.profiler import ProfilerActivity, profile

from loopformer import LoopLM, ModelConfig
from loopformer.flops import count_flops
from loopformer.model.depth import Depth
from loopformer.training.parallelize import parallelize, release_gathered

from .common import print_table

WORLD = 2
SEQ, BATCH = 128, 8  # global batch of one update: 8 sequences of 128 tokens
SMALL = ModelConfig(vocab_size=512, d_model=128, n_heads=4, n_prelude=1, n_core=2, n_coda=1,
                    max_seq_len=SEQ, injection="concat")
BYTES = {"float": 4, "c10::BFloat16": 2, "c10::Half": 2, "double": 8, "long int": 8, "int": 4}


def variants(cfg: ModelConfig, r: int) -> dict[str, tuple[ModelConfig, int]]:
    """The looped model at r steps, and untied stacks built from the same blocks: one copy of
    the core (equal parameters) and r copies (equal FLOPs per token)."""
    return {f"looped r={r}": (cfg, r),
            "untied, equal params": (cfg.replace(core="fixed", fixed_depth=1), 1),
            "untied, equal FLOPs": (cfg.replace(core="fixed", fixed_depth=r), r)}


# ---------------------------------------------------------------- part 1: measured
def _worker(rank: int, port: int, cfg: ModelConfig, steps: int, parallel: str, updates: int,
            out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = LoopLM(cfg)
    train_model = parallelize(model, parallel, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH // WORLD, SEQ),
                           generator=torch.Generator().manual_seed(rank))

    def update():
        train_model(tokens, Depth(0, steps), labels=tokens).loss.backward()
        release_gathered(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    update()  # DDP's first update builds its buckets; not counted
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(updates):
            update()
    if rank == 0:
        trace = Path(out).with_suffix(".trace.json")
        prof.export_chrome_trace(str(trace))
        payload: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for event in json.loads(trace.read_text())["traceEvents"]:
            name = str(event.get("name", ""))
            if event.get("ph") == "X" and name.startswith("gloo:"):
                args = event["args"]
                size = sum(BYTES[t] * _numel(d) for t, d in
                           zip(args["Input type"], args["Input Dims"]) if t in BYTES)
                payload[name][0] += 1
                payload[name][1] += size
        Path(out).write_text(json.dumps({k: [c / updates, b / updates]
                                         for k, (c, b) in payload.items()}))
    dist.destroy_process_group()


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def measure_collectives(cfg: ModelConfig, steps: int, parallel: str, updates: int) -> dict:
    """Per update on rank 0: {gloo collective: [calls, bytes of its input tensors]}."""
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        out = str(Path(tmp) / "collectives.json")
        mp.spawn(_worker, args=(port, cfg, steps, parallel, updates, out), nprocs=WORLD)
        return json.loads(Path(out).read_text())


def wire_bytes(collectives: dict, parallel: str, world: int = WORLD) -> float:
    """Bytes one process sends over a ring per update. all_gather's input is this process's
    shard: it receives the other world-1 shards. A gradient reduce-scatter (FSDP) moves
    (world-1)/world of its input; gloo implements it as an all-reduce, which the profiler names
    so, and which moves twice that (DDP's all-reduce: 2 (world-1)/world)."""
    total = 0.0
    for name, (_, size) in collectives.items():
        if name == "gloo:all_gather":
            total += (world - 1) * size
        elif name == "gloo:all_reduce":
            total += (1 if parallel == "fsdp" else 2) * (world - 1) / world * size
        elif name == "gloo:broadcast":  # a pipelined broadcast passes the tensor on once
            total += size
        else:
            raise ValueError(f"unexpected collective {name}: {collectives}")
    return total


def train_flops(cfg: ModelConfig, steps: int, batch: int, seq: int, device="cpu") -> int:
    """FLOPs of one forward and backward over batch x seq tokens (FlopCounterMode)."""
    with torch.device(device):
        model = LoopLM(cfg)
    model.to(device)  # rebuilds the RoPE tables (made on the CPU) on the meta device too
    tokens = torch.zeros(batch, seq, dtype=torch.long, device=device)
    return count_flops(lambda: model(tokens, Depth(0, steps), labels=tokens).loss.backward()
                       )["total"]


def unit_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of the whole model, and of the FSDP units resharded after forward (and so
    gathered again in backward): the prelude and coda blocks, and an untied core's blocks."""
    with torch.device("meta"):
        model = LoopLM(cfg)
    backbone = model.backbone
    regathered = [*backbone.prelude, *backbone.coda]
    if cfg.core == "fixed":
        regathered += [block for copy in backbone.core.layers for block in copy.blocks]
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    return {"params": model.num_parameters(), "regathered": count(regathered)}


def predicted_wire_bytes(params: int, regathered: int, parallel: str, world: float,
                         param_bytes: int = 4, grad_bytes: int = 4) -> float:
    """The formula part 2 uses: DDP all-reduces the gradients (ring: 2 (W-1)/W of them);
    FSDP gathers every parameter for forward, the resharded units again for backward, and
    reduce-scatters the gradients ((W-1)/W each). Padding of the shards is ignored."""
    share = (world - 1) / world
    if parallel == "ddp":
        return 2 * share * params * grad_bytes
    return share * ((params + regathered) * param_bytes + params * grad_bytes)


def measured_rows(updates: int) -> list[dict]:
    rows = []
    for name, (cfg, steps) in variants(SMALL, 8).items():
        flops = train_flops(cfg, steps, BATCH // WORLD, SEQ)
        units = unit_params(cfg)
        for parallel in ("ddp", "fsdp"):
            collectives = measure_collectives(cfg, steps, parallel, updates)
            wire = wire_bytes(collectives, parallel)
            rows.append({"model": name, "parallel": parallel, "params": units["params"],
                         "GFLOP/update/process": flops / 1e9,
                         "collectives/update": sum(c for c, _ in collectives.values()),
                         "payload MB": sum(b for _, b in collectives.values()) / 1e6,
                         "wire MB": wire / 1e6,
                         "formula MB": predicted_wire_bytes(**units, parallel=parallel,
                                                            world=WORLD) / 1e6,
                         "FLOPs/byte": flops / wire})
    return rows


# ---------------------------------------------------------------- part 2: on paper
# Huginn's shape (2 prelude / 4 core / 2 coda blocks, sandwich norm, concat adapter, head
# dimension 128), scaled in width to about 1B and 8B parameters.
LARGE = {
    "1B": ModelConfig(vocab_size=65536, d_model=3072, n_heads=24, n_kv_heads=8, n_prelude=2,
                      n_core=4, n_coda=2, injection="concat", norm="sandwich",
                      max_seq_len=4096),
    "8B": ModelConfig(vocab_size=65536, d_model=9216, n_heads=72, n_kv_heads=8, n_prelude=2,
                      n_core=4, n_coda=2, injection="concat", norm="sandwich",
                      max_seq_len=4096),
}
TOKENS_PER_GPU = 8 * 4096  # tokens one accelerator processes per update
ACCELERATOR_FLOPS = 400e12  # achieved bf16 FLOP/s (about 40% of an H100's dense peak)
LINKS_GBIT = (10, 100, 400)
PAPER_WORLD = 64


def paper_rows() -> list[dict]:
    rows = []
    for size, cfg in LARGE.items():
        for r in (8, 32):
            for name, (variant, steps) in variants(cfg, r).items():
                if name == "untied, equal params" and r == 32:
                    continue  # the same model as at r = 8
                units = unit_params(variant)
                flops = train_flops(variant, steps, 1, 4096, device="meta") / 4096 \
                    * TOKENS_PER_GPU
                compute_s = flops / ACCELERATOR_FLOPS
                for parallel in ("ddp", "fsdp"):
                    # bf16 parameters gathered, fp32 gradients reduced
                    wire = predicted_wire_bytes(**units, parallel=parallel, world=PAPER_WORLD,
                                                param_bytes=2, grad_bytes=4)
                    row = {"size": size, "model": name,
                           "r": r if name != "untied, equal params" else "-",
                           "parallel": parallel, "params (B)": units["params"] / 1e9,
                           "TFLOP/update/GPU": flops / 1e12, "GB/update/GPU": wire / 1e9,
                           "FLOPs/byte": flops / wire}
                    for gbit in LINKS_GBIT:
                        comm_s = wire / (gbit * 1e9 / 8)
                        row[f"comm % @{gbit}Gb/s"] = 100 * comm_s / (comm_s + compute_s)
                    rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=3, help="measured updates per run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"Part 1, measured: {WORLD} gloo processes, global batch {BATCH} x {SEQ} tokens, "
          f"{args.updates} updates; model {SMALL.d_model}-wide, "
          f"{SMALL.n_prelude}/{SMALL.n_core}/{SMALL.n_coda} blocks")
    measured = measured_rows(args.updates)
    print_table(measured, list(measured[0]))
    print(f"\nPart 2, on paper: {PAPER_WORLD} GPUs, {TOKENS_PER_GPU} tokens per GPU per update, "
          f"{ACCELERATOR_FLOPS / 1e12:.0f} TFLOP/s achieved, no overlap; bf16 parameters "
          "gathered, fp32 gradients reduced")
    paper = paper_rows()
    print_table(paper, list(paper[0]))
    if args.json:
        args.json.write_text(json.dumps({"measured": measured, "paper": paper}, indent=1))


if __name__ == "__main__":
    main()
