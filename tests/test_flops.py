"""The attention FLOP formulas registered for torch's CPU flash-attention kernels."""

import torch
import torch.nn.functional as F

from loopformer.flops import count_flops


def explicit_attention(q, k, v, causal: bool):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        keep = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(-1) @ v


def test_cpu_attention_forward_counts_what_the_explicit_products_count():
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    fused = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    explicit = count_flops(lambda: explicit_attention(q, k, v, causal=False))
    assert fused["total"] == explicit["total"] > 0


def test_causal_attention_counts_only_the_pairs_below_the_diagonal():
    T = 16
    q, k, v = (torch.randn(1, 2, T, 8) for _ in range(3))
    full = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))["total"]
    causal = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))["total"]
    assert causal * 2 * T == full * (T + 1)


def test_attention_backward_is_five_products():
    q, k, v = (torch.randn(1, 2, 8, 4, requires_grad=True) for _ in range(3))
    forward = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))["total"]
    both = count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert both["total"] == forward * 7 // 2  # 2 products forward, 5 backward


def test_grouped_expert_matmul_counts_like_one_matmul_per_expert():
    from loopformer.model.moe import expert_matmul

    x, w = torch.randn(12, 16, requires_grad=True), torch.randn(3, 8, 16, requires_grad=True)
    offsets = torch.tensor([5, 5, 12], dtype=torch.int32)

    def step(grouped):
        y = expert_matmul(x, w, offsets, grouped=grouped)
        (y * y).sum().backward()

    grouped, looped = count_flops(lambda: step(True)), count_flops(lambda: step(False))
    assert grouped["total"] == looped["total"] == 3 * 2 * 12 * 16 * 8  # forward, dx, dw
