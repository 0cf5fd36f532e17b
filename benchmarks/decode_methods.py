"""Decoding on a small byte-level language model: exact vs compressed KV cache, recomputing
the prefix, self-speculative decoding, and decoding with an exit criterion.

The model is trained first (a few minutes on a CPU) on a local text corpus, by default the
Python standard library's own source files, so nothing is downloaded:

    python -m benchmarks.decode_methods --train-updates 500 --out runs/lm-bytes
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from loopformer import KVCache, LoopLM, ModelConfig
from loopformer.files import write_json_atomic
from loopformer.training.checkpoint import load_weights, save_checkpoint

from .common import measure, print_table

MODEL = ModelConfig(vocab_size=256, d_model=128, n_heads=4, n_kv_heads=2, ffn_hidden=384,
                    n_prelude=1, n_core=2, n_coda=1, injection="concat", norm="sandwich",
                    max_seq_len=512, mean_steps=8)


def load_corpus(path: Path, limit: int = 4_000_000) -> np.ndarray:
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    if not files:
        raise SystemExit(f"no text found at {path}")
    data = b"".join(f.read_bytes() for f in files)[:limit]
    return np.frombuffer(data, dtype=np.uint8)


def train(model: LoopLM, data: np.ndarray, updates: int, seq: int = 128, batch: int = 8,
          seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    train_part = data[: int(0.95 * len(data))]
    losses = []
    model.train()
    for step in range(updates):
        for group in optimizer.param_groups:  # warmup, then cosine
            group["lr"] = 2e-3 * min(1, (step + 1) / 50) * 0.5 * (
                1 + np.cos(np.pi * step / updates))
        starts = rng.integers(0, len(train_part) - seq - 1, batch)
        ids = torch.tensor(np.stack([train_part[s:s + seq] for s in starts]), dtype=torch.long)
        depth = int(rng.integers(2, 13))  # U{2..12}: usable at shallow and deep settings
        loss = model(ids, depth, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == updates - 1:
            print(f"  update {step:4d}: loss {loss.item():.3f} nats/byte at {depth} steps")
    model.eval()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--out", type=Path, default=Path("runs/lm-bytes"))
    parser.add_argument("--train-updates", type=int, default=500)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_corpus(args.corpus)
    model = LoopLM(MODEL)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "latest").exists():
        load_weights(args.out, model)
        print(f"loaded the trained model from {args.out}")
    else:
        print(f"training a {model.num_parameters():,}-parameter byte LM on {len(data):,} bytes "
              f"of {args.corpus} for {args.train_updates} updates")
        start = time.perf_counter()
        train(model, data, args.train_updates)
        print(f"  trained in {time.perf_counter() - start:.0f}s")
        save_checkpoint(args.out, args.train_updates, model.state_dict(),
                        {"update": args.train_updates})
    model.eval()

    held_out = data[int(0.95 * len(data)):]
    prompt = torch.tensor(held_out[:args.prompt_tokens][None].copy(), dtype=torch.long)
    n, r = args.new_tokens, args.num_steps
    with torch.no_grad():
        ids = torch.tensor(held_out[:1025][None].copy(), dtype=torch.long)[:, :512]
        bits = {s: float(model(ids, s, labels=ids).loss) / np.log(2) for s in (1, 2, 4, 8, 16)}
    print("held-out bits/byte by core steps: " +
          ", ".join(f"{s}: {b:.3f}" for s, b in bits.items()))

    rows = []
    reference = model.generate(prompt, n, r)

    def add(name, fn, tokens, extra=None):
        timing = measure(fn, repeats=args.repeats)
        rows.append({"method": name, "tokens/s": tokens / timing["median_s"],
                     "spread": f"{tokens / timing['max_s']:.1f}-{tokens / timing['min_s']:.1f}",
                     **(extra or {})})

    add("exact cache", lambda: model.generate(prompt, n, r), n,
        {"cache MB": _cache_mb(model, prompt, n, r, None)})
    for slots in (4, 1):
        out = model.generate(prompt, n, r, cache=KVCache(core_slots=slots))
        agree = float((out[0, -n:] == reference[0, -n:]).float().mean())
        add(f"compressed cache, {slots} core slots",
            lambda: model.generate(prompt, n, r, cache=KVCache(core_slots=slots)), n,
            {"cache MB": _cache_mb(model, prompt, n, r, slots), "same tokens": agree})
    short = 32
    add(f"no cache (recompute prefix), {short} tokens", lambda: _recompute(model, prompt, short, r),
        short)
    for draft_steps, draft_tokens in ((2, 4), (4, 4), (4, 8)):
        out, stats = model.generate_speculative(prompt, n, r, draft_steps, draft_tokens)
        add(f"self-speculative draft {draft_steps} steps x {draft_tokens}",
            lambda: model.generate_speculative(prompt, n, r, draft_steps, draft_tokens), n,
            {"acceptance": stats["acceptance_rate"],
             "same tokens": float(torch.equal(out, reference))})
    for criterion, threshold in (("kl", 5e-4), ("kl-entropy", 5e-4)):
        out = model(torch.cat((prompt, reference[:, -n:]), 1), r, exit_criterion=criterion,
                    exit_threshold=threshold, exit_entropy=1.0)
        add(f"exit {criterion} < {threshold:g} (max {r})",
            lambda: model.generate(prompt, n, r, exit_criterion=criterion,
                                   exit_threshold=threshold), n,
            {"mean steps": float(out.steps.float().mean())})
    exact_speed = rows[0]["tokens/s"]
    for row in rows:
        row["speed-up"] = row["tokens/s"] / exact_speed
    print(f"\ngreedy decoding of {n} tokens after a {args.prompt_tokens}-token prompt at "
          f"{r} core steps ({args.repeats} repeats, median; spread = slowest-fastest)")
    print_table(rows, ["method", "tokens/s", "spread", "speed-up", "cache MB", "acceptance",
                       "same tokens", "mean steps"])
    write_json_atomic(args.out / "decode.json", {"bits_per_byte": bits, "rows": rows,
                                                 "num_steps": r, "new_tokens": n})


def _recompute(model, prompt, n, r):
    ids = prompt
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat((ids, model(ids, r).logits[:, -1:].argmax(-1)), dim=1)
    return ids


def _cache_mb(model, prompt, n, r, slots) -> float:
    cache = KVCache(core_slots=slots)
    model.generate(prompt, n, r, cache=cache)
    return cache.nbytes() / 2**20


if __name__ == "__main__":
    main()
