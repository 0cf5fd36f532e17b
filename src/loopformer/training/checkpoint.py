"""Atomic checkpoints: a run killed at any moment keeps its last good checkpoint.

A checkpoint is a directory `ckpt-NNNNNNN/` (weights as safetensors, trainer state as a torch
file) written under a temporary name and renamed into place; the file `latest` names the newest
one and is replaced atomically only after that rename. Older checkpoints are pruned afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..files import fsync_dir, write_text_atomic

LATEST = "latest"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer.pt"


class CheckpointError(ValueError):
    """A run directory that is missing, incomplete or corrupt."""


def save_checkpoint(run_dir: Path, update: int, weights: dict[str, torch.Tensor],
                    trainer_state: dict, keep: int = 2) -> Path:
    """Write the full `weights` (a state dict) after optimiser update `update` and the trainer
    state atomically."""
    run_dir = Path(run_dir)
    name = f"ckpt-{update:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    # Tied weights share storage; safetensors stores each tensor once, so save clones.
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()},
              tmp / WEIGHTS)
    torch.save(trainer_state, tmp / TRAINER_STATE)
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    final = run_dir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(run_dir)
    write_text_atomic(run_dir / LATEST, name + "\n")
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; train one with "
                              "`loopformer train --out DIR`")
    pointer = run_dir / LATEST
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint (no '{LATEST}' file): was the "
                              "run started with `loopformer train`, and did it save once?")
    path = run_dir / pointer.read_text().strip()
    if not (path / WEIGHTS).is_file() or not (path / TRAINER_STATE).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete or missing")
    return path


def read_checkpoint(run_dir: Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """The newest checkpoint's path, full weights and trainer state, on the CPU."""
    path = latest_checkpoint(run_dir)
    try:
        weights = load_file(path / WEIGHTS)
        # Tensors and plain values only: unpickling a shared run directory must not run code.
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise CheckpointError(f"checkpoint {path} is corrupt: {error}") from None
    return path, weights, state


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> dict:
    """Load the newest weights into `model` (plain or sharded); return the trainer state."""
    path, weights, state = read_checkpoint(run_dir)
    missing, unexpected = set_model_state_dict(
        model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}")
    return state


# A run's full state whatever its parallelism: FSDP gathers the shards (every process must
# call), and only the main process receives the tensors (on the CPU). The optimiser state is
# keyed by parameter name, so a run resumes with any number of processes.
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The full weights and optimiser state (by parameter name) of a plain or sharded model."""
    return (get_model_state_dict(model, options=FULL),
            get_optimizer_state_dict(model, optimizer, options=FULL))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict) -> None:
    """Load a full optimiser state into `optimizer` (sharding it where `model` is sharded).
    loopformer 0.1 keyed the state by parameter index; it is renamed first."""
    if any(isinstance(k, int) for k in state["state"]):
        state = _index_to_names(model, optimizer, state)
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))


def _index_to_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict) -> dict:
    """torch's Optimizer.state_dict numbers parameters in param-group order."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**saved, "params": [order[i] for i in saved["params"]]}
              for saved in state["param_groups"]]
    return {"state": {order[i]: v for i, v in state["state"].items()}, "param_groups": groups}
