"""`loopformer train`: every ModelConfig and TrainConfig field as a flag (`--model.FIELD`,
`--train.FIELD`, derived by tyro from the dataclasses), over defaults from a recipe (`--task`,
`--preset`) or from a config file (`--config`, e.g. a run's config.json)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import tyro

from .config import ModelConfig
from .training.config import TrainConfig
from .training.recipes import recipe


@dataclass(frozen=True)
class TrainFlags:
    """Train a task model; writes config.json, metrics.jsonl and checkpoints into --out.

    Defaults come from the recipe named by --task and --preset, then from --config FILE;
    each --model.* / --train.* flag overrides one field; the flat flags are shorthands."""

    task: str = "graph"
    """graph | logic | family | chains | composition | parity | modarith | text: picks the
    recipe; or package.module:ClassName, a Task subclass of your own (its defaults over the
    generic recipe of its interface)."""
    preset: Literal["paper", "quick"] = "quick"
    """quick (minutes on a laptop CPU) or paper (the source paper's size)."""
    config: Path | None = None
    """A JSON file {"model": {...}, "train": {...}} (any subset of fields) over the recipe;
    a run's config.json repeats that run exactly."""
    seed: int | None = None
    """Seeds the data, the initialisation and the depth sampler (= --train.seed)."""
    out: Path = Path("runs/graph-quick")
    """The run directory."""
    resume: bool = False
    """Continue the run in --out from its newest checkpoint with its stored configuration:
    --updates extends it, other configuration flags are named and ignored; without a
    checkpoint there, start the run (from its stored configuration if it has one)."""
    updates: int | None = None
    """Optimiser updates (= --train.updates)."""
    batch_size: int | None = None
    """Examples in one update, over all processes and micro-batches (= --train.batch-size)."""
    grad_accum: int = 1
    """Split each process's share of an update into this many micro-batches (less memory, the
    same update up to float rounding); may change on --resume."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """auto: cuda, then mps, then cpu; may change on --resume."""
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    """ddp or fsdp (FSDP2) trains on the processes started by torchrun (nccl on CUDA, gloo on
    CPU); --batch-size stays the global batch."""
    data: tuple[Path, ...] = ()
    """task text: the corpus, .txt/.md/.jsonl files or directories (= --train.data)."""
    tokenizer: Path | None = None
    """task text: a tokenizer.json; default: a byte-level BPE trained on the corpus."""
    threads: int | None = None
    """torch CPU threads."""
    progress: bool = True
    """Show a progress bar."""
    alpha: float | None = None
    """Per-step supervision weight; 0 = loss on the final step only (= --train.alpha)."""
    weight_decay: float | None = None
    """AdamW weight decay (= --train.weight-decay)."""
    train_depth: tuple[int, int] | None = None
    """LOW HIGH: core steps per update from U{LOW..HIGH}; fixed when LOW == HIGH."""
    baseline: Literal["none", "param", "compute"] = "none"
    """Train the fixed-depth model without recurrence instead: one untied copy of the core
    (param: same parameters) or as many as the mean training depth (compute)."""
    halting: Literal["none", "act"] = "none"
    """act adds a learned halting unit (ACT) that halts within the largest training depth."""
    curriculum: bool | None = None
    """Raise the training complexity once the hardest level is solved (= --train.curriculum)."""
    bf16: bool = False
    """bf16 autocast (= --train.bf16)."""
    compile: bool = False
    """torch.compile the repeated regions: one core step, prelude, coda (= --train.compile)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Flags that say how a run executes, not what it computes: they apply on --resume too.
RUN_FLAGS = {"out", "resume", "grad_accum", "device", "parallel", "threads", "progress",
             "config"}


def parse_train_flags(argv: list[str]) -> tuple[TrainFlags, set[str]]:
    """The flags of `argv`, with the model and training configs they describe in .model and
    .train, and the names of the options given. Unknown flags and config keys are errors that
    name them."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--task")
    early.add_argument("--preset", default="quick")
    early.add_argument("--config", type=Path)
    known, _ = early.parse_known_args(argv)
    model_cfg, train_cfg, task = base_configs(known.task, known.preset, known.config)
    # An empty default keeps --train.task-options one free-form list of KEY VALUE pairs (tyro
    # turns a non-empty dict into one flag per key); the given pairs go over the recipe's.
    defaults = TrainFlags(task=task, preset=known.preset, config=known.config, model=model_cfg,
                          train=train_cfg.replace(task_options={}))
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            flags, unknown = tyro.cli(TrainFlags, default=defaults, args=argv,
                                      prog="loopformer train", return_unknown_args=True)
    except SystemExit as exit:  # tyro drew a box for a bad value: keep its words, one line
        if exit.code:
            raise ValueError(_box_text(messages.getvalue())) from None
        raise
    if unknown:
        raise ValueError(f"unknown flag {unknown[0]!r} for `loopformer train`; "
                         "`loopformer train --help` lists every flag")
    flags = replace(flags, train=flags.train.replace(
        task_options={**train_cfg.task_options, **flags.train.task_options}))
    return apply_shorthands(flags, train_cfg), given_options(argv)


def given_options(argv: list[str]) -> set[str]:
    """The options named on the command line: "seed", "model.d_model", ... ("--no-x": "x")."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            section, _, name = token[2:].split("=")[0].rpartition(".")
            name = name.removeprefix("no-").replace("-", "_")
            names.add(f"{section}.{name}" if section else name)
    return names


def _box_text(box: str) -> str:
    """The message inside one of tyro's error boxes, on one line."""
    lines = (line.strip(" │╭╮╰╯─-") for line in box.splitlines())
    words = [line for line in lines if line and not line.startswith("For full helptext")]
    return " ".join(words[1:] if len(words) > 1 else words) + \
        " (`loopformer train --help` lists every flag)"


def base_configs(task: str | None, preset: str,
                 config: Path | None) -> tuple[ModelConfig, TrainConfig, str]:
    """The recipe's configs, overlaid with the config file's fields."""
    data = read_config_file(config) if config else {}
    task = task or data.get("train", {}).get("task", "graph")
    model_cfg, train_cfg = recipe(task, preset)
    model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), **data.get("model", {})})
    train_cfg = TrainConfig.from_dict({**train_cfg.to_dict(), **data.get("train", {}),
                                       "task": task})
    return model_cfg, train_cfg, task


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--config {path} is not valid JSON: {error}") from None
    allowed = {"model", "train", "task_version"}  # a run's config.json records the version
    if not isinstance(data, dict) or set(data) - allowed:
        extra = sorted(set(data) - allowed) if isinstance(data, dict) else data
        raise ValueError(f"--config {path}: unknown keys {extra}; a config file holds "
                         '{"model": {...}, "train": {...}}')
    return data


def apply_shorthands(flags: TrainFlags, base_train: TrainConfig) -> TrainFlags:
    """Fold the flat flags into .model and .train. A flat flag and its --train.* field that
    disagree are an error, not a silent choice."""
    train, changes = flags.train, {}
    for name in ("seed", "updates", "batch_size", "alpha", "weight_decay", "curriculum"):
        value = getattr(flags, name)
        if value is None:
            continue
        if getattr(train, name) not in (value, getattr(base_train, name)):
            raise ValueError(f"--{name.replace('_', '-')} {value} and --train."
                             f"{name.replace('_', '-')} {getattr(train, name)} disagree; "
                             "give one of them")
        changes[name] = value
    if flags.data:  # stored absolute, so that --config repeats the run from anywhere
        changes["data"] = tuple(str(p.resolve()) for p in flags.data)
    if flags.tokenizer is not None:
        changes["tokenizer"] = str(flags.tokenizer.resolve())
    if flags.bf16:
        changes["bf16"] = True
    if flags.compile:
        changes["compile"] = True
    if flags.train_depth is not None:  # a fixed training depth when both numbers agree
        low, high = flags.train_depth
        changes.update(depth="fixed" if low == high else "uniform", depth_low=low,
                       depth_high=high, depth_mean=(low + high) / 2)
    train = train.replace(**changes)
    model = flags.model
    if flags.baseline != "none":
        mean = train.depth_mean if train.depth != "uniform" else \
            (train.depth_low + train.depth_high) / 2
        # depth "task": depth_mean is the mean of the task's steps (its recipe), and the
        # looped model trains U{0..depth_extra} steps beyond them
        mean += train.depth_extra / 2
        depth = 1 if flags.baseline == "param" else round(mean)
        model = model.replace(core="fixed", fixed_depth=depth)
        if train.depth == "task":
            train = train.replace(depth="fixed", depth_extra=0)
    if flags.halting == "act":
        model = model.replace(halting="act", mean_steps=train.depth_high)
    return replace(flags, model=model, train=train)


def train(argv: list[str]) -> None:
    """`loopformer train ...`"""
    from .training.parallelize import leave_world
    from .training.trainer import Trainer

    flags, given = parse_train_flags(argv)
    if flags.threads is not None:
        if flags.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {flags.threads}")
        torch.set_num_threads(flags.threads)
    model_cfg, train_cfg, resume = flags.model, flags.train, flags.resume
    if resume and (flags.out / "config.json").is_file():
        model_cfg, train_cfg = resumed_configs(flags, given)
    else:
        resume = False
    try:
        trainer = Trainer(model_cfg, train_cfg, flags.out, progress=flags.progress,
                          device=flags.device, grad_accum=flags.grad_accum,
                          parallel=flags.parallel)
        start = time.perf_counter()
        result = trainer.fit(resume=resume)
    finally:
        leave_world()
    if trainer.world.is_main:
        what = "validation" if train_cfg.task == "text" else "held-out accuracy by complexity"
        model = trainer.model
        active = model.num_parameters(active=True)
        params = f"{model.num_parameters():,} parameters" + (
            f" ({active:,} active per token)" if active != model.num_parameters() else "")
        print(f"trained {params} for {trainer.update} "
              f"updates in {time.perf_counter() - start:.0f}s; {what}: "
              + ", ".join(f"{c}: {a:.3f}" for c, a in result.items()))


def resumed_configs(flags: TrainFlags, given: set[str]):
    """A resumed run keeps its stored configuration; --updates (or --train.updates) extends
    or shortens it, and every other configuration flag given is named as ignored."""
    from .training.run import load_config

    model_cfg, train_cfg = load_config(flags.out)
    updates = flags.train.updates if given & {"updates", "train.updates"} else train_cfg.updates
    ignored = sorted(given - {"updates", "train.updates"} - RUN_FLAGS)
    if ignored:
        print(f"resuming {flags.out} with its stored configuration; ignoring "
              + ", ".join(f"--{name.replace('_', '-')}" for name in ignored))
    if updates != train_cfg.updates:
        print(f"resuming {flags.out}: {train_cfg.updates} -> {updates} updates (the "
              "learning-rate schedule is stretched to the new length)")
        train_cfg = train_cfg.replace(updates=updates)
    print(f"resuming {flags.out} ({train_cfg.task}, {train_cfg.updates} updates)")
    return model_cfg, train_cfg
