"""TrainConfig: every setting of a training run, validated, stored in the run's config.json.

"updates" counts optimiser updates; "steps" always means thinking steps (core steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..config import DictConfig

# Field names of run directories written before the rename (loopformer 0.1).
LEGACY_FIELDS = {"steps": "updates", "warmup_steps": "warmup_updates"}


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    task: str = "graph"
    task_options: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    updates: int = 2000
    batch_size: int = 64
    train_examples: int = 12_000
    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_updates: int = 100
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
    """torch.compile the model's repeated regions (loopformer.compile.compile_regions)."""
    eval_every: int = 250
    eval_examples: int = 256
    eval_steps: int | None = None
    """Core steps used for periodic evaluation; None = depth_high."""
    checkpoint_every: int = 250

    def __post_init__(self):
        for name in ("updates", "batch_size", "train_examples", "eval_every", "eval_examples",
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

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """From a config.json, including one written by loopformer 0.1 (LEGACY_FIELDS)."""
        data = {LEGACY_FIELDS.get(k, k): v for k, v in data.items()}
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return super().from_dict(data)
