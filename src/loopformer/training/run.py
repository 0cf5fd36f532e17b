"""Reading a run directory: its configs, its newest model, its metrics."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from ..config import ModelConfig
from ..data.tokenizer import load_tokenizer
from ..tasks import Task, make_task
from ..tasks.interfaces import TaskModel, TextLM, build_task_model
from .checkpoint import CheckpointError, load_weights
from .config import TrainConfig


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


def recorded_task_version(run_dir: Path) -> int:
    """The version of its task's generator a run was started on (1 before runs recorded it)."""
    return json.loads((Path(run_dir) / "config.json").read_text()).get("task_version", 1)


def load_run(run_dir: Path) -> tuple[Task, TaskModel, ModelConfig, TrainConfig]:
    """A trained run for evaluation: its task, model (newest weights) and configs. Reads
    config.json and model.safetensors only, never the trainer state."""
    model_cfg, train_cfg = load_config(run_dir)
    if train_cfg.task == "text":
        raise CheckpointError(f"{run_dir} is a language model (task 'text'): evaluate it with "
                              "`loopformer perplexity`")
    task = make_task(train_cfg.task, **train_cfg.task_options)
    trained_on = recorded_task_version(run_dir)
    try:
        model = build_task_model(task, model_cfg)
    except ValueError as error:
        if trained_on == task.version:
            raise
        raise CheckpointError(f"{run_dir} was trained on version {trained_on} of task "
                              f"{task.name!r}, whose generator is now version {task.version}, "
                              f"and the model cannot read the new examples ({error}); its "
                              "weights are intact, and a run on the new version needs training"
                              ) from None
    load_weights(run_dir, model, model_cfg.to_dict())
    return task, model.eval(), model_cfg, train_cfg


def training_keys(task: Task, train_cfg: TrainConfig) -> set:
    """The keys of the run's training examples (regenerated from its seed), which held-out
    evaluation sets leave out."""
    return {task.key(ex) for ex in task.train_set(train_cfg.train_examples, train_cfg.seed)}


def metrics_record(line: str) -> dict:
    """One line of metrics.jsonl; a record written by loopformer 0.1 names the optimiser
    update "step", which is renamed "update"."""
    record = json.loads(line)
    if "update" not in record and "step" in record:
        record["update"] = record.pop("step")
    return record


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl. A torn last line (a kill or a full disk mid-write) is
    dropped; damage anywhere else is an error naming the line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a loopformer run?")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(metrics_record(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise CheckpointError(f"{path} line {number} is not a JSON record; remove it "
                                  "to continue") from None
    return records


def load_text_run(run_dir: Path) -> tuple[TextLM, Tokenizer, ModelConfig, TrainConfig]:
    """A language-model run (task 'text'): its model (newest weights; `.lm` is the LoopLM),
    tokenizer and configs. Reads config.json, tokenizer.json and model.safetensors only."""
    model_cfg, train_cfg = load_config(run_dir)
    if train_cfg.task != "text":
        raise CheckpointError(f"{run_dir} trained task {train_cfg.task!r}, not a language "
                              "model: this command takes a run of `loopformer train --task text`")
    model = TextLM(model_cfg)
    load_weights(run_dir, model, model_cfg.to_dict())
    return model.eval(), load_tokenizer(Path(run_dir) / "tokenizer.json"), model_cfg, train_cfg
