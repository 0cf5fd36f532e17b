"""FLOPs of a training step: torch's FlopCounterMode, taught the CPU attention kernels.

torch.utils.flop_counter has formulas for the CUDA attention kernels but none for
`_scaled_dot_product_flash_attention_for_cpu` and its backward, so on CPU it counts attention
as zero FLOPs. Importing this module registers them: the forward is two matrix products
(Q K^T and P V), the backward five (Q K^T recomputed, then dP, dV, dQ and dK), each
2 * B * H_q * S_q * S_k * D FLOPs, counted only below the diagonal when is_causal (the pairs a
causal kernel must compute), so the count never credits skipped work. The experts' grouped matmul (`torch._grouped_mm`) has
no formula either: it is taught here too.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_CPU_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def attention_products_flops(query_shape, key_shape, is_causal: bool) -> int:
    """FLOPs of one (S_q x D) @ (D x S_k) product per query head, summed over batch and heads;
    with is_causal only the pairs (i, j <= i) (torch's top-left alignment) count."""
    batch, heads, s_q, head_dim = query_shape
    s_k = key_shape[2]
    pairs = sum(min(i + 1, s_k) for i in range(s_q)) if is_causal else s_q * s_k
    return 2 * batch * heads * pairs * head_dim


def _cpu_flash_forward_flops(query_shape, key_shape, value_shape, dropout_p=0.0,
                             is_causal=False, *args, out_shape=None, **kwargs) -> int:
    return 2 * attention_products_flops(query_shape, key_shape, is_causal)


def _cpu_flash_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, out,
                              logsumexp, dropout_p=0.0, is_causal=False, *args,
                              out_shape=None, **kwargs) -> int:
    return 5 * attention_products_flops(query_shape, key_shape, is_causal)


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """torch._grouped_mm (the MoE experts): every row of the jagged operand meets one group's
    matrix. (M, K) x (G, K, N) and (K, M) x (M, N) (the weight gradient) are 2*M*K*N;
    (G, M, K) x (G, K, N) is G times that."""
    if len(a_shape) == 3 and len(b_shape) == 3:
        groups, m, k = a_shape
        return 2 * groups * m * k * b_shape[2]
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


for _op, _formula in ((_CPU_FLASH, _cpu_flash_forward_flops),
                      (_CPU_FLASH_BACKWARD, _cpu_flash_backward_flops),
                      (torch.ops.aten._grouped_mm, _grouped_mm_flops)):
    if _op not in flop_registry:  # a torch that counts them itself keeps its own formula
        register_flop_formula(_op)(_formula)


def count_flops(fn) -> dict[str, int]:
    """Run fn() under FlopCounterMode; FLOPs by op name, and their sum under "total"."""
    with FlopCounterMode(display=False) as counter:
        fn()
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    counts["total"] = counter.get_total_flops()
    return counts
