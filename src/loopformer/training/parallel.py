"""Several processes (torchrun): the process group, and the model wrapped for data parallelism.

`torchrun --nproc-per-node N -m loopformer train ... --parallel ddp` starts N processes; each
reads RANK, WORLD_SIZE and LOCAL_RANK from its environment. The backend is nccl on CUDA and
gloo on the CPU. DistributedDataParallel all-reduces (averages) the gradients once per update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .device import resolve_device

PARALLEL = ("none", "ddp")


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
                             "pass --parallel ddp")
        return World(), resolve_device(device)
    if not dist.is_initialized() and "RANK" not in os.environ:
        raise ValueError(f"--parallel {parallel} needs several processes: launch with "
                         f"`torchrun --nproc-per-node N -m loopformer train ... --parallel "
                         f"{parallel}`")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), resolved


def wrap_for_training(model: nn.Module, parallel: str, device: torch.device) -> nn.Module:
    """The module the training step calls: `model` itself, or a DDP wrapper around it (which
    shares its parameters, so the optimiser, evaluation and checkpoints use `model`)."""
    if parallel == "none":
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


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
