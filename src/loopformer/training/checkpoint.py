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

from ..files import fsync_dir, write_text_atomic

LATEST = "latest"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer.pt"


class CheckpointError(ValueError):
    """A run directory that is missing, incomplete or corrupt."""


def save_checkpoint(run_dir: Path, update: int, model: torch.nn.Module, trainer_state: dict,
                    keep: int = 2) -> Path:
    """Write the weights after optimiser update `update` and the trainer state atomically."""
    run_dir = Path(run_dir)
    name = f"ckpt-{update:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    # Tied weights share storage; safetensors stores each tensor once, so save clones.
    save_file({k: v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()},
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


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> dict:
    """Load the newest weights into `model`; return the trainer state."""
    path = latest_checkpoint(run_dir)
    try:
        weights = load_file(path / WEIGHTS)
        # Tensors and plain values only: unpickling a shared run directory must not run code.
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise CheckpointError(f"checkpoint {path} is corrupt: {error}") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}")
    return state
