"""Atomic checkpoints: a run killed at any moment keeps its last good checkpoint.

A checkpoint is a directory `ckpt-NNNNNNN/` (weights as safetensors, trainer state as a torch
file) written under a temporary name and renamed into place; the file `latest` names the newest
one and is replaced atomically only after that rename. Older checkpoints are pruned afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..config import ModelConfig
from ..files import fsync_dir, temporary_dir, umask_mode, write_text_atomic

LATEST = "latest"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer.pt"


class CheckpointError(ValueError):
    """A run directory that is missing, incomplete, corrupt or unwritable."""


CONFIG_KEY = "loopformer.model_config"  # safetensors metadata: the config the weights fit
STATE_KEYS = ("optimizer", "max_level", "torch_rng")  # and "update" (0.1: "step")


def save_checkpoint(run_dir: Path, update: int, weights: dict[str, torch.Tensor],
                    trainer_state: dict, model_config: dict | None = None,
                    keep: int = 2) -> Path:
    """Write the full `weights` (a state dict) after optimiser update `update`, the model
    config they fit and the trainer state atomically. A failed write (a full disk) leaves the
    last good checkpoint in place and says so."""
    run_dir = Path(run_dir)
    name = f"ckpt-{update:07d}"
    tmp = None
    try:
        tmp = temporary_dir(run_dir, name)
        metadata = None if model_config is None else {CONFIG_KEY: json.dumps(model_config)}
        # Tied weights share storage; safetensors stores each tensor once, so save clones.
        save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()},
                  tmp / WEIGHTS, metadata=metadata)
        torch.save(trainer_state, tmp / TRAINER_STATE)
        for f in tmp.iterdir():
            os.chmod(f, umask_mode())
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        final = run_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        tmp = None
        fsync_dir(run_dir)
        write_text_atomic(run_dir / LATEST, name + "\n")
    except (OSError, SafetensorError, RuntimeError) as error:  # torch.save: RuntimeError
        kept = (run_dir / LATEST).read_text().strip() if (run_dir / LATEST).is_file() else None
        raise CheckpointError(f"could not write checkpoint {name} into {run_dir} ({error}); "
                              f"the last good checkpoint ({kept or 'none'}) is kept: free space "
                              "and continue with --resume") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / LATEST).is_file()


def latest_checkpoint(run_dir: Path) -> Path:
    """The directory `latest` names: always a ckpt-NNNNNNN inside `run_dir`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; train one with "
                              "`loopformer train --out DIR`")
    pointer = run_dir / LATEST
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint (no '{LATEST}' file): was the "
                              "run started with `loopformer train`, and did it save once?")
    name = pointer.read_text().strip()
    if not re.fullmatch(r"ckpt-\d{7}", name):  # a shared run must not point elsewhere
        raise CheckpointError(f"{pointer} names {name[:80]!r}, not a checkpoint of this run "
                              "(ckpt-NNNNNNN); refusing to follow it")
    path = run_dir / name
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete or missing")
    return path


def read_weights(path: Path, model_config: dict | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's weights on the CPU, checked: finite, and (when the checkpoint records
    it) trained with `model_config`."""
    try:
        weights = load_file(path / WEIGHTS)
        with safe_open(path / WEIGHTS, "pt") as f:
            stored = (f.metadata() or {}).get(CONFIG_KEY)
    except Exception as error:  # a truncated or foreign file: say which one
        raise CheckpointError(f"checkpoint {path} is corrupt: {error}") from None
    for name, value in weights.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"checkpoint {path} is damaged: {name} holds non-finite "
                                  "values")
    if stored is not None and model_config is not None:
        # A field added after the checkpoint was written held its default then.
        saved = {**ModelConfig().to_dict(), **json.loads(stored)}
        changed = sorted(k for k in set(saved) | set(model_config)
                         if saved.get(k) != model_config.get(k))
        if changed:
            raise CheckpointError(
                f"checkpoint {path} was trained with a different model config than config.json "
                + ", ".join(f"{k}: {saved.get(k)!r} vs {model_config.get(k)!r}"
                            for k in changed[:4]) + "; restore the run's config.json")
    return weights


def read_trainer_state(path: Path) -> dict:
    try:
        # Tensors and plain values only: unpickling a shared run directory must not run code.
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} has no readable trainer state: {error}") \
            from None
    missing = [k for k in (*STATE_KEYS, "update") if not isinstance(state, dict) or
               k not in state and not (k == "update" and "step" in state)]
    if missing:
        raise CheckpointError(f"checkpoint {path} has an incomplete trainer state (missing "
                              f"{missing}); resume from an intact run")
    return state


def load_weights(run_dir: Path, model: torch.nn.Module,
                 model_config: dict | None = None) -> Path:
    """Load the newest weights into `model` (plain or sharded); never reads the trainer
    state. Returns the checkpoint's path."""
    path = latest_checkpoint(run_dir)
    weights = read_weights(path, model_config)
    try:
        missing, unexpected = set_model_state_dict(
            model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    except RuntimeError as error:  # shapes that do not fit
        raise CheckpointError(f"checkpoint {path} does not fit this model: "
                              f"{str(error).splitlines()[-1].strip()[:300]}") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model: missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}")
    return path


def load_checkpoint(run_dir: Path, model: torch.nn.Module,
                    model_config: dict | None = None) -> dict:
    """Load the newest weights into `model`; return the trainer state (for resuming)."""
    path = load_weights(run_dir, model, model_config)
    return read_trainer_state(path)


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
