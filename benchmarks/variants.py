"""The seeds' variants side by side (`python -m benchmarks.variants`).

Attention at equal width (MHA, GQA, MLA): parameters, KV cache bytes per token (all slots at 8
thinking steps, fp32, measured with `KVCache.nbytes()` after a prefill), prefill and greedy
decode tokens/s at batch 1. FFN at equal active parameters (dense SwiGLU vs routed + shared
experts): parameters (total and active), training FLOPs per token (FlopCounterMode) and training
tokens/s of a full step (forward, backward, AdamW).
"""

from __future__ import annotations

import argparse

import torch

from loopformer import LoopLM, ModelConfig
from loopformer.flops import count_flops
from loopformer.model.moe import update_balance

from .common import measure, print_table

# The suite's reference config (benchmarks/suite.py) as plain multi-head attention.
BASE = ModelConfig(vocab_size=4096, d_model=256, n_heads=8, n_prelude=1, n_core=2, n_coda=1,
                   injection="concat", max_seq_len=1024, mean_steps=8)
STEPS = 8


def attentions(base: ModelConfig) -> dict[str, dict]:
    """Equal width: plain multi-head, grouped-query with a quarter of the kv heads, and MLA with
    the default latent (d/4) and with a smaller one plus a query bottleneck (d/8, d/2)."""
    d, heads = base.d_model, base.n_heads
    mla = base.replace(attention="mla")
    return {f"MHA ({heads} kv heads)": dict(),
            f"GQA ({heads // 4} kv heads)": dict(n_kv_heads=heads // 4),
            f"MLA (latent {mla.latent_rank}, rope {mla.rope_dim})": dict(attention="mla"),
            f"MLA (latent {d // 8}, rope {mla.rope_dim}, q {d // 2})":
                dict(attention="mla", kv_lora_rank=d // 8, q_lora_rank=d // 2)}


def ffns(base: ModelConfig) -> dict[str, dict]:
    """Equal active parameters: k + shared experts of the default width make the dense one."""
    moe = base.replace(ffn="moe")
    expert = f"{moe.expert_width}, top-{moe.experts_per_token} + {moe.n_shared_experts} shared"
    return {f"dense SwiGLU {base.ffn_width}": dict(),
            f"MoE {moe.n_experts} x {expert}": dict(ffn="moe"),
            f"MoE {2 * moe.n_experts} x {expert}": dict(ffn="moe", n_experts=2 * moe.n_experts)}


def attention_rows(prompt: int, new_tokens: int, repeats: int,
                   base: ModelConfig = BASE) -> list[dict]:
    rows = []
    for name, changes in attentions(base).items():
        torch.manual_seed(0)
        model = LoopLM(base.replace(**changes)).eval()
        ids = torch.randint(0, base.vocab_size, (1, prompt))
        with torch.no_grad():
            cache = model(ids, STEPS, use_cache=True).past_key_values
            prefill = measure(lambda: model(ids, STEPS, use_cache=True), repeats)
            decode = measure(lambda: model.generate(ids, new_tokens, STEPS), repeats)
        rows.append({"attention": name, "params": model.num_parameters(),
                     "cache B/token": cache.nbytes() // prompt,
                     "cache B/token/slot": cache.nbytes() // prompt // len(cache),
                     "prefill tok/s": prompt / prefill["median_s"],
                     "decode tok/s": new_tokens / (decode["median_s"] - prefill["median_s"])})
    return rows


def ffn_rows(batch: int, seq: int, repeats: int, base: ModelConfig = BASE) -> list[dict]:
    rows = []
    for name, changes in ffns(base).items():
        torch.manual_seed(0)
        model = LoopLM(base.replace(**changes)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, base.vocab_size, (batch, seq))

        def step():
            optimizer.zero_grad(set_to_none=True)
            out = model(ids, STEPS, labels=ids)
            loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
            loss.backward()
            optimizer.step()
            update_balance(model)

        flops = count_flops(step)["total"]
        timed = measure(step, repeats)
        rows.append({"ffn": name, "params": model.num_parameters(),
                     "active params": model.num_parameters(active=True),
                     "train MFLOP/token": flops / (batch * seq) / 1e6,
                     "train tok/s": batch * seq / timed["median_s"],
                     "spread": f"{timed['min_s'] / timed['median_s']:.2f}-"
                               f"{timed['max_s'] / timed['median_s']:.2f}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"attention at d={BASE.d_model}, {BASE.n_heads} heads, {STEPS} steps, batch 1, "
          f"prompt {args.prompt}, {args.new_tokens} new tokens (fp32, "
          f"{torch.get_num_threads()} threads)")
    print_table(attention_rows(args.prompt, args.new_tokens, args.repeats),
                ["attention", "params", "cache B/token", "cache B/token/slot", "prefill tok/s",
                 "decode tok/s"])
    print(f"\nFFN at equal active parameters: a training step of {args.batch} x {args.seq} "
          f"tokens at {STEPS} steps")
    print_table(ffn_rows(args.batch, args.seq, args.repeats),
                ["ffn", "params", "active params", "train MFLOP/token", "train tok/s", "spread"])


if __name__ == "__main__":
    main()
