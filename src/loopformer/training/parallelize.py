"""Several processes (torchrun): the process group, and the model made data-parallel.

`torchrun --nproc-per-node N -m loopformer train ... --parallel ddp|fsdp` starts N processes;
each reads RANK, WORLD_SIZE and LOCAL_RANK from its environment. The backend is nccl on CUDA
and gloo on the CPU.

- ddp: DistributedDataParallel keeps a full copy of the weights on every process and
  all-reduces (averages) the gradients once per update.
- fsdp: FSDP2 (`fully_shard`) keeps 1/N of every weight on each process, all-gathers a unit's
  weights before it runs and reduce-scatters its gradients. Prelude and coda blocks are units
  of their own. The core's blocks are one unit that is gathered once per update and kept
  across the loop and its backward (DESIGN.md §3): run T times, it would otherwise be
  re-gathered for every step's backward (measured: T - 1 extra all-gathers), and a looped
  model's communication would grow with its depth. `release_gathered` frees it after the
  update's last backward.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from ..model.backbone import Backbone
from ..model.core import RecurrentCore
from .device import resolve_device

PARALLEL = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes: config, metrics, checkpoints, the progress bar."""
        return self.rank == 0


def join_world(parallel: str, device: str) -> tuple[World, torch.device]:
    """This process's place among the processes, and its device (cuda:LOCAL_RANK on CUDA)."""
    if parallel not in PARALLEL:
        raise ValueError(f"--parallel must be one of {PARALLEL}, got {parallel!r}")
    if parallel == "none":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("started by torchrun with several processes but --parallel none: "
                             "pass --parallel ddp or --parallel fsdp")
        return World(), resolve_device(device)
    if not dist.is_initialized() and "RANK" not in os.environ:
        raise ValueError(f"--parallel {parallel} needs processes started by torchrun: launch "
                         f"with `torchrun --nproc-per-node N -m loopformer train ... "
                         f"--parallel {parallel}`")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), resolved


def parallelize(model: nn.Module, parallel: str, device: torch.device) -> nn.Module:
    """The module the training step calls. none: `model`; ddp: a wrapper sharing its
    parameters; fsdp: `model` itself, sharded in place. Either way the optimiser, evaluation
    and checkpoints use `model`."""
    if parallel == "ddp":
        # The only buffers are the RoPE tables, equal everywhere by construction: broadcasting
        # them before every forward (DDP's default; measured by benchmarks.comm) is overhead.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                       else None, forward_sync_buffers=False)
    if parallel == "fsdp":
        shard(model)
    return model


def shard(model: nn.Module) -> None:
    """FSDP2 units: each prelude/coda block, the looped core's blocks (kept gathered across
    the loop), each block of a fixed-depth baseline's untied copies, then the root (the
    embeddings, readout and whatever else is left)."""
    units: list[tuple[nn.Module, bool]] = []  # (module, reshard after forward)
    for backbone in {id(m): m for m in model.modules() if isinstance(m, Backbone)}.values():
        units += [(block, True) for block in (*backbone.prelude, *backbone.coda)]
        if isinstance(backbone.core, RecurrentCore):
            units.append((backbone.core.blocks, False))
        else:  # each copy runs once: nothing to keep
            units += [(block, True) for copy in backbone.core.layers for block in copy.blocks]
    for module, reshard in units:
        fully_shard(module, reshard_after_forward=reshard)
        if not reshard:
            module.set_reshard_after_backward(False)
    fully_shard(model)


def gradient_sync(train_model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Whether this backward communicates gradients: off for all but the last micro-batch of
    an update, so gradients accumulate locally and are reduced once."""
    if isinstance(train_model, DistributedDataParallel) and not enabled:
        return train_model.no_sync()
    if isinstance(train_model, FSDPModule):
        train_model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def release_gathered(model: nn.Module) -> None:
    """Reshard the FSDP units kept gathered through the update (the core), before the
    optimiser changes their shards; a no-op for unsharded models."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def sum_over_world(values: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of per-process values (means over a process's share of the batch, weighted by
    that share, add up to means over the whole batch)."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def leave_world() -> None:
    """Tear down the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
