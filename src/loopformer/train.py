"""The training loop: depth sampling, silent thinking or per-step supervision, truncated
backprop, curriculum, AdamW with warmup + cosine, clipping, bf16 autocast, periodic evaluation,
JSON-lines metrics, atomic checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import (CheckpointError, load_checkpoint, save_checkpoint, write_json_atomic,
                         write_text_atomic)
from .config import ModelConfig
from .depth import sample_depth
from .evaluate import accuracy_by_steps
from .interfaces import TaskModel, build_task_model
from .tasks import Task, make_task


@dataclass(frozen=True)
class TrainConfig:
    task: str = "graph"
    task_options: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    train_examples: int = 12_000
    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    depth: Literal["fixed", "uniform", "poisson-lognormal", "poisson"] = "uniform"
    depth_low: int = 5
    depth_high: int = 8
    depth_mean: float = 6.5
    backprop_steps: int | None = None
    """Truncated backprop through the last k steps (Huginn: 8); None = through all steps."""
    alpha: float = 0.0
    """L = (1 - alpha) CE(final) + alpha/T sum_t CE(t); 0 = silent thinking (Chen 2026)."""
    ponder_cost: float = 0.01
    """ACT only: weight of the ponder cost mean(N + R) in the loss (Universal Transformers)."""
    curriculum: bool = False
    curriculum_threshold: float = 0.95
    bf16: bool = False
    compile: bool = False
    """torch.compile the model's repeated regions (Backbone.compile_regions)."""
    eval_every: int = 250
    eval_examples: int = 256
    eval_steps: int | None = None
    """Core steps used for periodic evaluation; None = depth_high."""
    checkpoint_every: int = 250

    def __post_init__(self):
        for name in ("steps", "batch_size", "train_examples", "eval_every", "eval_examples",
                     "checkpoint_every", "depth_low"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.depth_high < self.depth_low:
            raise ValueError(f"TrainConfig.depth_high ({self.depth_high}) must be >= depth_low "
                             f"({self.depth_low})")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"TrainConfig.alpha must lie in [0, 1], got {self.alpha}")
        if self.backprop_steps is not None and self.backprop_steps < 1:
            raise ValueError("TrainConfig.backprop_steps must be >= 1 or None, got "
                             f"{self.backprop_steps}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["betas"] = tuple(data["betas"])
        return cls(**data)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def loss_and_accuracy(model: TaskModel, batch: dict, num_steps, alpha: float,
                      ponder_cost: float = 0.0):
    out = model(batch, num_steps, all_steps=alpha > 0)
    logits, labels = out.logits, batch["label"]
    final = F.cross_entropy(logits[-1].float(), labels)
    loss = final
    if alpha > 0:
        per_step = torch.stack([F.cross_entropy(l.float(), labels) for l in logits]).mean()
        loss = (1 - alpha) * final + alpha * per_step
    if out.ponder is not None:  # ACT: pay for every step taken (Graves 2016)
        loss = loss + ponder_cost * out.ponder.mean()
    accuracy = (logits[-1].argmax(-1) == labels).float().mean()
    return loss, accuracy


class Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, out: Path,
                 progress: bool = True):
        self.model_cfg, self.cfg, self.out, self.progress = model_cfg, cfg, Path(out), progress
        self.task: Task = make_task(cfg.task, **cfg.task_options)
        torch.manual_seed(cfg.seed)
        self.model = build_task_model(self.task, model_cfg)
        if cfg.compile:
            self.model.backbone.compile_regions()
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
            fused=True)  # one pass per update: 2.8 ms instead of 8.8 for 4M parameters on CPU
        self.train_set = self.task.train_set(cfg.train_examples, cfg.seed)
        levels = sorted({ex.complexity for ex in self.train_set})
        self.levels = levels
        # Curriculum (Loop-Think-Generalize): start with the two easiest levels.
        self.max_level = levels[min(1, len(levels) - 1)] if cfg.curriculum else levels[-1]
        self.eval_sets = {c: self.task.collate(self.task.eval_set(c, cfg.eval_examples,
                                                                  cfg.seed))
                          for c in levels}
        self.step = 0
        self._full_batch: tuple[int, dict] | None = None

    def state(self) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "max_level": self.max_level, "torch_rng": torch.get_rng_state()}

    def resume(self) -> None:
        state = load_checkpoint(self.out, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.max_level = state["step"], state["max_level"]
        torch.set_rng_state(state["torch_rng"])

    def batch(self, step: int) -> dict:
        pool = [i for i, ex in enumerate(self.train_set) if ex.complexity <= self.max_level]
        if self.cfg.batch_size >= len(pool):  # full batch: collate once per curriculum level
            if self._full_batch is None or self._full_batch[0] != self.max_level:
                full = self.task.collate([self.train_set[i] for i in pool])
                self._full_batch = (self.max_level, full)
            return self._full_batch[1]
        rng = np.random.default_rng([self.cfg.seed, step, 0xBA7C])
        chosen = rng.choice(len(pool), size=self.cfg.batch_size, replace=False)
        return self.task.collate([self.train_set[pool[i]] for i in sorted(chosen)])

    def num_steps(self, step: int):
        c = self.cfg
        depth = sample_depth(c.depth, step, c.seed, low=c.depth_low, high=c.depth_high,
                             mean=c.depth_mean)
        if c.backprop_steps is None or depth <= c.backprop_steps:
            return depth
        return (depth - c.backprop_steps, c.backprop_steps)

    @torch.no_grad()
    def evaluate(self) -> dict[int, float]:
        steps = self.cfg.eval_steps or self.cfg.depth_high
        self.model.eval()
        result = {c: accuracy_by_steps(self.model, batch, [steps])[steps]
                  for c, batch in self.eval_sets.items()}
        self.model.train()
        return result

    def fit(self, resume: bool = False) -> dict:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
            # A run killed after its last checkpoint logged updates that will be redone.
            metrics = out / "metrics.jsonl"
            kept = [line for line in metrics.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.step]
            write_text_atomic(metrics, "".join(line + "\n" for line in kept))
        else:
            if (out / "latest").exists():
                raise CheckpointError(f"{out} already holds a run; pass --resume to continue "
                                      "it, or choose another --out")
            write_json_atomic(out / "config.json", {"model": self.model_cfg.to_dict(),
                                                    "train": cfg.to_dict()})
            (out / "metrics.jsonl").write_text("")
        self.model.train()
        # Redraw often on a terminal, rarely in a log file.
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress,
                   desc=f"train {cfg.task}", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
        metrics_file = open(out / "metrics.jsonl", "a")
        last_eval: dict = {}
        start, tokens = time.perf_counter(), 0
        while self.step < cfg.steps:
            step = self.step
            batch = self.batch(step)
            num_steps = self.num_steps(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(cfg, step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, acc = loss_and_accuracy(self.model, batch, num_steps, cfg.alpha,
                                              cfg.ponder_cost)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            tokens += batch["label"].numel() * _tokens_per_example(batch)
            record = {"step": self.step, "loss": loss.item(), "train_acc": acc.item(),
                      "lr": lr_at(cfg, step), "grad_norm": float(grad_norm),
                      "num_steps": sum(num_steps) if isinstance(num_steps, tuple) else num_steps,
                      "max_level": self.max_level}
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                last_eval = self.evaluate()
                record["eval"] = {str(c): a for c, a in last_eval.items()}
                hardest = last_eval.get(self.max_level, 0.0)
                if cfg.curriculum and hardest > cfg.curriculum_threshold:
                    higher = [c for c in self.levels if c > self.max_level]
                    if higher:
                        self.max_level = higher[0]
            elapsed = time.perf_counter() - start
            record["tokens_per_s"] = tokens / elapsed
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.2f}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                save_checkpoint(out, self.step, self.model, self.state())
        bar.close()
        metrics_file.close()
        return last_eval


def _tokens_per_example(batch: dict) -> int:
    mask = batch.get("attention_mask", batch.get("node_mask"))
    return mask.shape[1]


def load_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig]:
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a loopformer run directory (no config.json); "
                              "create one with `loopformer train --out DIR`")
    try:
        data = json.loads(config_path.read_text())
        model_cfg = ModelConfig.from_dict(data["model"])
        train_cfg = TrainConfig.from_dict(data["train"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path} is corrupt: {error}") from None
    return model_cfg, train_cfg


def load_run(run_dir: Path) -> tuple[Task, TaskModel, ModelConfig, TrainConfig, dict]:
    """A trained run: its task, model (newest weights), configs and trainer state."""
    model_cfg, train_cfg = load_config(run_dir)
    task = make_task(train_cfg.task, **train_cfg.task_options)
    model = build_task_model(task, model_cfg)
    state = load_checkpoint(run_dir, model)
    return task, model.eval(), model_cfg, train_cfg, state
