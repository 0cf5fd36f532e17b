"""How the initial weight scale shapes attention at the start of training (docs/results.md,
family: why loopformer's blocks at init std 0.02 do not start the lookup a plain PyTorch
transformer learns).

For each std, a fresh family model (the recipe's, no LayerScale) runs one batch of one-fact
texts with relation targets; the script prints, averaged over every attention call of the
loop, the attention entropy as a fraction of its maximum (1.0: uniform), the spread of the
attention logits and the mean largest attention weight, then the gradient norms that reach the
query, key, value and output projections of the core block. PyTorch's own attention layer
(`nn.MultiheadAttention`, d = 128) draws its query/key/value projections at the std printed
first, for comparison.

    python init_scale.py --stds 0.02 0.06 0.1
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import loopformer.model.attention as attention
from loopformer.tasks import make_task
from loopformer.tasks.interfaces import build_task_model
from loopformer.training.loss import position_loss
from loopformer.training.recipes import FAMILY_MODEL


class AttentionStats:
    """Wraps `loopformer.model.attention.attend` (which every attention call goes through) to
    measure the attention weights SDPA computes but does not return."""

    def __init__(self):
        self.rows: list[tuple[float, float, float]] = []
        self.attend = attention.attend

    def __call__(self, q, k, v, ctx, scale=None):
        logits = (q @ k.transpose(-1, -2)) * (scale or 1 / math.sqrt(q.shape[-1]))
        if ctx.mask is not None:  # a boolean mask: True = may attend
            logits = logits.masked_fill(~ctx.mask, float("-inf"))
        p = logits.softmax(-1)
        allowed = torch.isfinite(logits)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        max_entropy = allowed.sum(-1).clamp_min(2).log()
        self.rows.append(((entropy / max_entropy).mean().item(), logits[allowed].std().item(),
                          p.max(-1).values.mean().item()))
        return self.attend(q, k, v, ctx, scale)

    def mean(self) -> list[float]:
        return [sum(r[i] for r in self.rows) / len(self.rows) for i in range(3)]


def measure(std: float, steps: int, examples: int) -> str:
    task = make_task("family", relation_targets=True, train_complexities=(1,))
    torch.manual_seed(0)
    model = build_task_model(task, FAMILY_MODEL.replace(init_std=std, layer_scale_init=None))
    batch = task.collate(task.train_set(examples, seed=1))
    stats = AttentionStats()
    attention.attend = stats
    try:
        out = model(batch, steps)
    finally:
        attention.attend = stats.attend
    loss = F.cross_entropy(out.logits[-1], batch["label"]) + \
        position_loss(out.position_logits, batch["position_labels"])
    loss.backward()
    attn = model.backbone.core.blocks[0].attn
    d = attn.out.weight.shape[0]
    grad = attn.qkv.weight.grad  # rows: queries, keys, values (n_heads = kv_heads here)
    q, k, v = (grad[i * d:(i + 1) * d].norm().item() for i in range(3))
    entropy, spread, top = stats.mean()
    return (f"| {std} | {entropy:.3f} | {spread:.3f} | {top:.3f} | {q:.2e} | {k:.2e} | "
            f"{v:.2e} | {attn.out.weight.grad.norm().item():.2e} | {q / v:.3f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stds", type=float, nargs="+", default=[0.02, 0.06, 0.1])
    parser.add_argument("--steps", type=int, default=6, help="core steps")
    parser.add_argument("--examples", type=int, default=64, help="texts in the batch")
    args = parser.parse_args(argv)
    reference = nn.MultiheadAttention(FAMILY_MODEL.d_model, FAMILY_MODEL.n_heads)
    print(f"nn.MultiheadAttention(d={FAMILY_MODEL.d_model}) q/k/v weights: std "
          f"{reference.in_proj_weight.std().item():.3f}\n")
    print("| init std | entropy / max | logit std | max weight | grad Wq | grad Wk | grad Wv "
          "| grad Wo | Wq / Wv |\n|---|---|---|---|---|---|---|---|---|")
    for std in args.stds:
        print(measure(std, args.steps, args.examples))


if __name__ == "__main__":
    main()
