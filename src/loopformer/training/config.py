"""TrainConfig: every setting of a training run, validated, stored in the run's config.json.

"updates" counts optimiser updates; "steps" always means thinking steps (core steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..config import DictConfig
from ..tasks import TASKS

# Field names of run directories written before the rename (loopformer 0.1).
LEGACY_FIELDS = {"steps": "updates", "warmup_steps": "warmup_updates"}


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    task: str = "graph"
    """The task: graph | logic | family | chains | composition | parity | modarith | text, or
    a Task subclass of your own as package.module:ClassName."""
    task_options: dict[str, int | float | bool | str] = dataclasses.field(default_factory=dict)
    """Keyword arguments of the task's generator, e.g. modulus 97 (modarith)."""
    seed: int = 0
    """Seeds the data, the initialisation and the depth sampler."""
    updates: int = 2000
    """Optimiser updates."""
    batch_size: int = 64
    """Examples in one update, over all processes and micro-batches (the global batch)."""
    train_examples: int = 12_000
    """Size of the generated training set."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay on matrices (grokking needs about 1.0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_updates: int = 100
    """Linear warmup of the learning rate over this many updates."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to min_lr_ratio * lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    depth: Literal["fixed", "uniform", "poisson-lognormal", "poisson", "task"] = "uniform"
    """Core steps per update: fixed, uniform U{low..high}, poisson, poisson-lognormal (Huginn),
    or task: each example its own count from Task.thinking_steps (training and evaluation)."""
    depth_extra: int = 0
    """depth "task" only: each training example runs U{0..depth_extra} steps beyond its task's
    count, so that a state holding its answer learns to keep it on longer loops (evaluation
    uses the task's count)."""
    depth_low: int = 5
    """Fewest core steps an update draws."""
    depth_high: int = 8
    """Most core steps an update draws."""
    depth_mean: float = 6.5
    """Mean core steps of the poisson samplers."""
    backprop_steps: int | None = None
    """Truncated backprop through the last k steps (Huginn: 8); None = through all steps."""
    alpha: float = 0.0
    """L = (1 - alpha) CE(final) + alpha/T sum_t CE(t); 0 = silent thinking (Chen 2026)."""
    ponder_cost: float = 0.01
    """ACT only: weight of the ponder cost mean(N + R) in the loss (Universal Transformers)."""
    fixed_point_weight: float = 0.0
    """Weight of the mean relative per-step state change ||s_t - s_(t-1)|| / ||s_t|| in the
    loss: states that settle once they hold their answer, instead of drifting (0 = off)."""
    fixed_point_warmup: int = 0
    """The fixed-point weight rises linearly from 0 over this many updates, so that the
    penalty does not hold the states still before the model has learned to use them."""
    group_by_length: int = 0
    """Draw this many batches' examples at once, sort them by length and cut them into
    batches of similar length, in a shuffled order: less padding per update (reasoning tasks;
    0 = off, every batch drawn alone)."""
    curriculum: bool = False
    """Start on the two easiest levels; add one once the hardest is solved."""
    curriculum_threshold: float = 0.95
    """Held-out accuracy on the hardest level that adds the next one (accuracy on its
    training examples where the training set holds the level's whole space)."""
    bf16: bool = False
    """bf16 autocast on the training device."""
    compile: bool = False
    """torch.compile the model's repeated regions (loopformer.compile.compile_regions)."""
    eval_every: int = 250
    """Evaluate the held-out sets every this many updates."""
    eval_examples: int = 256
    """Held-out examples per complexity level."""
    eval_steps: int | None = None
    """Core steps used for periodic evaluation; None = depth_high."""
    checkpoint_every: int = 250
    """Write a checkpoint every this many updates (and after the last)."""
    data: tuple[str, ...] = ()
    """task 'text': the corpus, .txt/.md/.jsonl files or directories of them."""
    tokenizer: str | None = None
    """task 'text': a tokenizer.json to use; None = train a byte-level BPE on the corpus."""
    tokenizer_vocab_size: int = 4096
    """task 'text': vocabulary of the BPE trained on the corpus."""
    val_fraction: float = 0.05
    """task 'text': the share of documents held out for validation."""

    def __post_init__(self):
        self.check_types()
        if self.task not in (*TASKS, "text") and ":" not in self.task:
            raise ValueError(f"TrainConfig.task must be one of {sorted(TASKS)}, 'text' or "
                             f"package.module:ClassName (a Task of your own), got {self.task!r}")
        if self.group_by_length and self.task == "text":
            raise ValueError("TrainConfig.group_by_length groups a reasoning task's examples; "
                             "text windows all have the same length: leave it 0")
        if self.data and self.task != "text":
            raise ValueError(f"TrainConfig.data (--data) is a corpus for task 'text'; task "
                             f"{self.task!r} generates its own examples")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must lie in (0, 1), got "
                             f"{self.val_fraction}")
        for name in ("updates", "batch_size", "train_examples", "eval_every", "eval_examples",
                     "checkpoint_every", "depth_low"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.depth_high < self.depth_low:
            raise ValueError(f"TrainConfig.depth_high ({self.depth_high}) must be >= depth_low "
                             f"({self.depth_low})")
        for name in ("lr", "grad_clip", "depth_mean"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("seed", "warmup_updates", "weight_decay", "ponder_cost",
                     "fixed_point_weight", "fixed_point_warmup", "group_by_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must lie in [0, 1), got {self.betas}")
        for name in ("min_lr_ratio", "curriculum_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name} must lie in [0, 1], got "
                                 f"{getattr(self, name)}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"TrainConfig.eval_steps must be >= 1 or None, got "
                             f"{self.eval_steps}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"TrainConfig.alpha must lie in [0, 1], got {self.alpha}")
        if self.depth_extra < 0 or (self.depth_extra and self.depth != "task"):
            raise ValueError(f"TrainConfig.depth_extra ({self.depth_extra}) adds steps to depth "
                             "'task' only and must be >= 0")
        if self.depth == "task" and self.backprop_steps is not None:
            raise ValueError("TrainConfig.backprop_steps truncates one depth for the batch; with "
                             "depth 'task' each example has its own: leave backprop_steps None")
        if self.backprop_steps is not None and self.backprop_steps < 1:
            raise ValueError("TrainConfig.backprop_steps must be >= 1 or None, got "
                             f"{self.backprop_steps}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """From a config.json, including one written by loopformer 0.1 (LEGACY_FIELDS)."""
        data = {LEGACY_FIELDS.get(k, k): v for k, v in data.items()}
        for name in ("betas", "data"):  # JSON has lists only
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return super().from_dict(data)
