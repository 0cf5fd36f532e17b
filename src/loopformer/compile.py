"""compile_regions(model): torch.compile applied from outside the modules.

The modules hold parameters and a forward only; this wraps the repeated regions in place with
`nn.Module.compile`, which keeps parameter names (and so checkpoints) unchanged:

- the prelude and the coda (each a BlockStack) and one core step (`RecurrentCore.forward`:
  injection + shared blocks + renormalisation). The loop over steps stays in Python, so a new
  number of steps reuses the compiled step; truncated backprop adds one no-grad variant.
- a LoopLM's loss (log-softmax and its gradient fuse into one pass over the logits) and its
  `forward_cached`, the cached call whose KV slots were prepared up front: one graph per call,
  compiled once per depth with symbolic positions. (Compiled regions inside it are inlined.)
- a LoopLM's `decode_token`, which `generate` calls for every new token: one graph covering
  the prelude, every thinking step and the coda at fixed shapes (`fullgraph=True`,
  `dynamic=False`), compiled once per (batch, cache capacity, depth) and reused by every later
  generation (loopformer.model.static_decoding).
"""

from __future__ import annotations

import types

import torch
from torch import nn

from .model.core import FixedDepthCore
from .model.lm import LoopLM


# Inductor options for the decoding graph, each measured on a CPU (docs/performance.md):
# the C++ wrapper calls the kernels without a Python line each (~20% per token), and at
# batch 1 the matrix-vector products become inductor's own reductions, which use every core,
# instead of BLAS calls (~1.8x per token; `decompose_mm_pass` only takes single-row products).
DECODE_OPTIONS = {"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}}


def compile_regions(model: nn.Module, **options) -> nn.Module:
    """Compile `model`'s regions in place (options go to torch.compile); returns `model`.
    `model` is a LoopLM or any model with a `backbone` (the task interfaces)."""
    backbone = model.backbone
    cores = backbone.core.layers if isinstance(backbone.core, FixedDepthCore) else [backbone.core]
    for region in (backbone.prelude, *cores, backbone.coda):
        region.compile(**options)
    if isinstance(model, LoopLM):
        model.loss.compile(**options)
        # The class's method bound to this model, so a second call does not wrap a wrapper.
        cached = types.MethodType(LoopLM.forward_cached, model)
        model.forward_cached = torch.compile(cached, **{"dynamic": True, **options})
        # One graph per decoded token, every thinking step in it, at fixed shapes.
        decode = types.MethodType(LoopLM.decode_token, model)
        tuned = {} if options.keys() & {"backend", "mode", "options"} else \
            {"options": DECODE_OPTIONS}
        model.decode_token = torch.compile(decode, **{"fullgraph": True, "dynamic": False,
                                                      **tuned, **options})
    return model
