"""What a run trains on, chosen by TrainConfig.task: the batches of each update, the held-out
evaluation, and the state a checkpoint keeps.

- ExampleSource: a reasoning task (loopformer.tasks): a fixed seeded training set, the
  curriculum over complexity, accuracy per held-out complexity.
- TokenSource: text (task "text"): a corpus encoded once into memory-mapped tokens, random
  windows for training, validation loss and perplexity on held-out documents.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..data.corpus import corpus_files, documents
from ..data.tokenizer import check_fits, load_tokenizer, train_tokenizer
from ..data.default_corpus import default_documents, default_identity
from ..data.tokens import TokenSplit, cache_key, encode_corpus, file_identity
from ..evaluation.scoring import accuracy_at_task_steps, accuracy_by_steps, eval_batches
from ..tasks import Task, make_task
from ..tasks.base import to_device
from ..tasks.interfaces import TaskModel, TextLM, build_task_model
from .config import TrainConfig
from .parallelize import World, barrier


class ExampleSource:
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, task: Task | None = None):
        self.cfg = cfg
        self.task = task or make_task(cfg.task, **cfg.task_options)
        self.model_cfg = model_cfg
        self.train_set = self.task.train_set(cfg.train_examples, cfg.seed)
        self.levels = sorted({ex.complexity for ex in self.train_set})
        # Curriculum (Loop-Think-Generalize): start with the two easiest levels.
        self.max_level = self.levels[min(1, len(self.levels) - 1)] if cfg.curriculum \
            else self.levels[-1]
        keys = {self.task.key(ex) for ex in self.train_set}
        self.eval_sets = eval_batches(self.task, self.levels, cfg.eval_examples, cfg.seed, keys)
        self._full_batch: tuple[int, dict] | None = None
        self._covered_level_accuracy: float | None = None
        self._lengths: np.ndarray | None = None  # each training example's, for group_by_length

    def build_model(self) -> TaskModel:
        return build_task_model(self.task, self.model_cfg)

    def record(self) -> dict:
        """What config.json keeps about the task besides TrainConfig: its generator's version."""
        return {"task_version": self.task.version}

    def prepare(self, out: Path | None, world: World) -> None:
        """Nothing to write: examples are generated in memory."""

    def batch(self, update: int) -> dict:
        pool = [i for i, ex in enumerate(self.train_set) if ex.complexity <= self.max_level]
        if self.cfg.batch_size >= len(pool):  # full batch: collate once per curriculum level
            if self._full_batch is None or self._full_batch[0] != self.max_level:
                full = self.task.collate([self.train_set[i] for i in pool])
                self._full_batch = (self.max_level, full)
            return self._full_batch[1]
        group = self.cfg.group_by_length
        if group > 1 and group * self.cfg.batch_size <= len(pool):
            return self.task.collate([self.train_set[pool[i]] for i in
                                      self._grouped_batch(update, group, pool)])
        rng = np.random.default_rng([self.cfg.seed, update, 0xBA7C])
        chosen = rng.choice(len(pool), size=self.cfg.batch_size, replace=False)
        return self.task.collate([self.train_set[pool[i]] for i in sorted(chosen)])

    def _grouped_batch(self, update: int, group: int, pool: list[int]) -> np.ndarray:
        """Positions in `pool` of this update's batch: the `group` updates of its window draw
        their examples together, sorted by length and cut into batches taken in a shuffled
        order (a function of the update and the pool, so a resumed run draws the same)."""
        if self._lengths is None:
            self._lengths = np.array([self.task.length(ex) for ex in self.train_set])
        size = self.cfg.batch_size
        rng = np.random.default_rng([self.cfg.seed, update // group, 0x6E0B])
        drawn = rng.choice(len(pool), size=group * size, replace=False)
        by_length = drawn[np.argsort(self._lengths[np.asarray(pool)[drawn]], kind="stable")]
        part = rng.permutation(group)[update % group]
        return by_length[part * size:(part + 1) * size]

    def evaluate(self, model: TaskModel, steps: int | str) -> dict:
        """Accuracy per held-out complexity at `steps`, or "task": each example's own."""
        result = {c: self._accuracy(model, batch, steps) for c, batch in self.eval_sets.items()}
        # A level whose whole space the training set holds has no held-out row (parity's short
        # strings, logic depth 1): the curriculum then judges it on its training examples.
        self._covered_level_accuracy = None
        if self.cfg.curriculum and self.max_level not in self.eval_sets:
            examples = [ex for ex in self.train_set if ex.complexity == self.max_level]
            self._covered_level_accuracy = self._accuracy(
                model, self.task.collate(examples[:self.cfg.eval_examples]), steps)
        return result

    def _accuracy(self, model: TaskModel, batch: dict, steps: int | str) -> float:
        if steps == "task":
            return accuracy_at_task_steps(model, batch, self.task)
        return accuracy_by_steps(model, batch, [steps])[steps]

    def after_evaluation(self, result: dict) -> None:
        """The curriculum: add the next level once the hardest one is solved."""
        hardest = result.get(self.max_level, self._covered_level_accuracy) or 0.0
        if self.cfg.curriculum and hardest > self.cfg.curriculum_threshold:
            higher = [c for c in self.levels if c > self.max_level]
            if higher:
                self.max_level = higher[0]

    def state(self) -> dict:
        return {"max_level": self.max_level}

    def load_state(self, state: dict) -> None:
        self.max_level = state["max_level"]


class TokenSource:
    """Windows of max_seq_len tokens; the model predicts every next token."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, out: Path):
        self.cfg, self.model_cfg, self.out = cfg, model_cfg, Path(out)
        if cfg.data:
            files = corpus_files(cfg.data)
            self.documents, self.identity = lambda: documents(files), file_identity(files)
        else:  # the embedded default corpus (loopformer.data.default_corpus)
            self.documents, self.identity = default_documents, [default_identity()]
        saved = self.out / "tokenizer.json"  # a run keeps the tokenizer it started with
        source = saved if saved.is_file() else cfg.tokenizer
        self.tokenizer = load_tokenizer(source) if source else \
            train_tokenizer(self.documents(), cfg.tokenizer_vocab_size)
        check_fits(self.tokenizer, model_cfg.vocab_size)
        self.seq_len = model_cfg.max_seq_len - 1  # windows of seq_len + 1 tokens
        self.levels, self.max_level = [1], 1

    def build_model(self) -> TaskModel:
        return TextLM(self.model_cfg)

    def record(self) -> dict:
        return {}

    def prepare(self, out: Path, world: World) -> None:
        """The main process saves the tokenizer and encodes the corpus; then every process
        maps the tokens."""
        if world.is_main:
            self.tokenizer.save(str(Path(out) / "tokenizer.json"))
            self.encode(out)
        barrier(world)
        self.open(out)

    def encode(self, out: Path) -> Path:
        """The corpus encoded once, cached under DIR/tokens/ by files, tokenizer and split."""
        key = cache_key(self.identity, self.tokenizer, self.cfg.val_fraction, self.cfg.seed)
        directory = Path(out) / "tokens" / key
        if not (directory / "meta.json").is_file():
            encode_corpus(self.documents(), self.tokenizer, directory, self.cfg.val_fraction,
                          self.cfg.seed)
        return directory

    def open(self, out: Path) -> None:
        directory = self.encode(out)
        self.train = TokenSplit(directory, "train", self.seq_len)
        self.val = TokenSplit(directory, "val", self.seq_len)

    def batch(self, update: int) -> dict:
        rng = np.random.default_rng([self.cfg.seed, update, 0x7E47])
        return _next_token_batch(self.train.sample(self.cfg.batch_size, rng))

    def val_batches(self, count: int, size: int = 64) -> list[dict]:
        """The first `count` validation windows as next-token batches of at most `size`."""
        count = min(len(self.val), count)
        return [_next_token_batch(self.val.sequences(range(start, min(count, start + size))))
                for start in range(0, count, size)]

    def evaluate(self, model: TaskModel, steps: int) -> dict:
        """Mean next-token loss over the first eval_examples validation windows."""
        device = next(model.parameters()).device
        total = tokens = 0.0
        for batch in self.val_batches(self.cfg.eval_examples):
            batch = to_device(batch, device)
            logits = model(batch, steps).logits[-1]
            labels = batch["label"]
            total += float(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), reduction="sum"))
            tokens += labels.numel()
        loss = total / tokens
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def after_evaluation(self, result: dict) -> None:
        pass

    def state(self) -> dict:
        return {"max_level": 1}

    def load_state(self, state: dict) -> None:
        pass


def _next_token_batch(windows: torch.Tensor) -> dict:
    return {"input_ids": windows[:, :-1], "label": windows[:, 1:]}


def make_source(cfg: TrainConfig, model_cfg: ModelConfig, out: Path | None,
                task: Task | None = None):
    if cfg.task == "text":
        if out is None:
            raise ValueError("task 'text' keeps its tokenizer and tokens in the run directory: "
                             "give the Trainer an `out`")
        return TokenSource(cfg, model_cfg, out)
    return ExampleSource(cfg, model_cfg, task)
