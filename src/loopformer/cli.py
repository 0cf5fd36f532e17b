"""The `loopformer` command. Subcommands and their flags are derived by tyro from signatures."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import torch
import tyro
from tyro.conf import Positional

from .config import ModelConfig
from .files import write_json_atomic
from .model.lm import LoopLM
from .training.checkpoint import CheckpointError


def demo(preset: str = "tiny", injection: Literal["add", "concat", "lti", "gated"] = "concat",
         steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64), prompt_len: int = 12,
         seed: int = 0) -> None:
    """Build a model and show how its output changes with the number of core steps."""
    torch.manual_seed(seed)
    state_init = "embed" if injection in ("gated", "lti") else "zeros"
    cfg = ModelConfig.from_preset(preset, injection=injection, state_init=state_init)
    model = LoopLM(cfg).eval()
    print(f"loopformer demo: preset={preset} injection={injection} "
          f"params={model.num_parameters():,} spectral_radius={model.spectral_radius()}")
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len))
    print(f"{'steps':>6} {'ms/forward':>11} {'|dlogits|/|logits|':>19}  greedy continuation")
    previous = None
    with torch.no_grad():
        for num_steps in steps:
            start = time.perf_counter()
            logits = model(prompt, num_steps).logits
            ms = 1e3 * (time.perf_counter() - start)
            change = "" if previous is None else \
                f"{float((logits - previous).norm() / previous.norm()):.2e}"
            tokens = model.generate(prompt, max_new_tokens=8, num_steps=num_steps)
            print(f"{num_steps:>6} {ms:>11.1f} {change:>19}  {tokens[0, prompt_len:].tolist()}")
            previous = logits
    print("Same weights, same prompt: only num_steps, chosen at call time, changed the output.")


def train(task: str = "graph", preset: Literal["paper", "quick"] = "quick", seed: int = 0,
          out: Path = Path("runs/graph-quick"), resume: bool = False, updates: int | None = None,
          alpha: float | None = None, weight_decay: float | None = None,
          train_depth: tuple[int, int] | None = None,
          baseline: Literal["none", "param", "compute"] = "none",
          halting: Literal["none", "act"] = "none", curriculum: bool | None = None,
          bf16: bool = False, compile: bool = False, batch_size: int | None = None,
          grad_accum: int = 1, device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
          parallel: Literal["none", "ddp", "fsdp"] = "none",
          threads: int | None = None, progress: bool = True) -> None:
    """Train a task model with a named recipe; writes config.json, metrics.jsonl, checkpoints.

    Args:
        task: graph | logic | family | chains | modarith.
        preset: quick (minutes on a laptop CPU) or paper (the source paper's size).
        seed: seeds the data, the initialisation and the depth sampler.
        out: the run directory.
        resume: continue the run in --out from its newest checkpoint with its stored
            configuration (the other recipe flags are then ignored); without a run there,
            start one.
        updates: optimiser updates (default: the recipe's).
        alpha: per-step supervision weight; 0 = loss on the final step only.
        weight_decay: AdamW weight decay (default: the recipe's).
        train_depth: LOW HIGH: core steps per batch from U{LOW..HIGH}; fixed when LOW == HIGH.
        baseline: train the fixed-depth model without recurrence instead: one untied copy of
            the core (param: same parameters) or as many as the mean training depth (compute).
        halting: act adds a learned halting unit (ACT) with its ponder cost.
        curriculum: raise the training complexity once the hardest level is solved.
        bf16: bf16 autocast.
        compile: torch.compile the repeated regions (one core step, prelude, coda).
        batch_size: examples in one update (default: the recipe's), whatever --grad-accum.
        grad_accum: split each update's batch into this many micro-batches (less memory,
            same update up to float rounding); may change on --resume.
        device: auto (cuda, then mps, then cpu), cpu, cuda or mps; may change on --resume.
        parallel: ddp trains on the processes started by torchrun (DistributedDataParallel;
            nccl on CUDA, gloo on CPU); --batch-size stays the global batch.
        threads: torch CPU threads.
        progress: show a progress bar.
    """
    from .training.recipes import recipe
    from .training.run import load_config
    from .training.trainer import Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    if resume and (out / "config.json").is_file():
        model_cfg, train_cfg = load_config(out)
        print(f"resuming {out} ({train_cfg.task}, {train_cfg.updates} updates)")
    else:
        resume = False
        model_cfg, train_cfg = recipe(task, preset)
        changes = {"seed": seed}
        if updates is not None:
            changes["updates"] = updates
        if batch_size is not None:
            changes["batch_size"] = batch_size
        if alpha is not None:
            changes["alpha"] = alpha
        if weight_decay is not None:
            changes["weight_decay"] = weight_decay
        if curriculum is not None:
            changes["curriculum"] = curriculum
        if bf16:
            changes["bf16"] = True
        if compile:
            changes["compile"] = True
        if train_depth is not None:  # a fixed training depth when both numbers agree
            low, high = train_depth
            changes.update(depth="fixed" if low == high else "uniform", depth_low=low,
                           depth_high=high, depth_mean=(low + high) / 2)
        train_cfg = train_cfg.replace(**changes)
        if baseline != "none":
            depth = 1 if baseline == "param" else round(
                train_cfg.depth_mean if train_cfg.depth != "uniform"
                else (train_cfg.depth_low + train_cfg.depth_high) / 2)
            model_cfg = model_cfg.replace(core="fixed", fixed_depth=depth)
        if halting == "act":  # ACT halts within the largest training depth
            model_cfg = model_cfg.replace(halting="act", mean_steps=train_cfg.depth_high)
    trainer = Trainer(model_cfg, train_cfg, out, progress=progress, device=device,
                      grad_accum=grad_accum, parallel=parallel)
    start = time.perf_counter()
    result = trainer.fit(resume=resume)
    if not trainer.world.is_main:
        return
    print(f"trained {trainer.model.num_parameters():,} parameters for {trainer.update} updates in "
          f"{time.perf_counter() - start:.0f}s; eval accuracy by complexity: "
          + ", ".join(f"{c}: {a:.3f}" for c, a in result.items()))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers such as 1,2,3, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} needs integers >= 1, got {text!r}")
    return values


def frontier(run_dir: Positional[Path], steps: str = "1,2,3,5,8,12,15,20",
             complexities: str | None = None, examples: int = 500,
             threads: int | None = None) -> None:
    """Evaluate a trained run on every (complexity, steps) pair; write frontier.json/.png."""
    from .evaluation.plotting import plot_frontier
    from .evaluation.scoring import format_grid, frontier_grid
    from .training.run import load_run

    if threads is not None:
        torch.set_num_threads(threads)
    step_list = _int_list(steps, "--steps")
    if examples < 1:
        raise ValueError(f"--examples must be >= 1, got {examples}")
    task, model, model_cfg, train_cfg, _ = load_run(run_dir)
    levels = _int_list(complexities, "--complexities") if complexities else \
        list(task.test_complexities)
    for c in levels:
        task.check_complexity(c)
    start = time.perf_counter()
    grid = frontier_grid(task, model, levels, step_list, examples, train_cfg.seed)
    kind = "fixed-depth baseline" if model_cfg.core == "fixed" else "recurrent"
    json_path, png_path = Path(run_dir) / "frontier.json", Path(run_dir) / "frontier.png"
    write_json_atomic(json_path, {"task": task.name,
                                  "train_complexities": list(task.train_complexities),
                                  "complexities": levels, "steps": step_list,
                                  "accuracy": grid})
    plot_frontier(png_path, levels, step_list, grid, task.train_complexities,
                  f"{task.name} ({kind})")
    print(f"{task.name}: accuracy by complexity (rows) and thinking steps (columns); "
          f"trained on {list(task.train_complexities)}; {examples} examples per row")
    print(format_grid(levels, step_list, grid))
    print(f"wrote {json_path} and {png_path} in {time.perf_counter() - start:.0f}s")


def adaptive(run_dir: Positional[Path],
             criteria: str = "kl,entropy-diff,latent-diff,cosine,argmax-stability,kl-entropy",
             thresholds: str = "", max_steps: int = 20, min_steps: int = 1,
             exit_entropy: float | None = None, complexities: str | None = None,
             examples: int = 500, threads: int | None = None) -> None:
    """Adaptive depth on a trained run: per complexity, accuracy and mean steps under each
    exit criterion next to the best fixed step count; writes DIR/adaptive.json.

    --thresholds kl=1e-3,cosine=1e-2 overrides the default thresholds (loopformer.model.exits)."""
    from .evaluation.scoring import adaptive_table, format_adaptive
    from .model.exits import DEFAULT_THRESHOLDS
    from .training.run import load_run

    if threads is not None:
        torch.set_num_threads(threads)
    names = [c.strip() for c in criteria.split(",") if c.strip()]
    for name in names:
        if name not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown criterion {name!r}; choose from "
                             f"{sorted(DEFAULT_THRESHOLDS)}")
    chosen: dict[str, float | None] = {name: None for name in names}
    for item in filter(None, (t.strip() for t in thresholds.split(","))):
        name, _, value = item.partition("=")
        if name not in chosen:
            raise ValueError(f"--thresholds names {name!r}, which --criteria does not list")
        try:
            chosen[name] = float(value)
        except ValueError:
            raise ValueError(f"--thresholds wants NAME=NUMBER, got {item!r}") from None
    task, model, _, train_cfg, _ = load_run(run_dir)
    levels = _int_list(complexities, "--complexities") if complexities else \
        list(task.test_complexities)
    start = time.perf_counter()
    table = adaptive_table(task, model, levels, chosen, max_steps, examples, train_cfg.seed,
                           min_steps, exit_entropy)
    write_json_atomic(Path(run_dir) / "adaptive.json", table)
    print(f"{task.name}: best fixed-step accuracy vs exit criteria (max {max_steps} steps, "
          f"{examples} examples per row)")
    print(format_adaptive(table))
    print(f"wrote {Path(run_dir) / 'adaptive.json'} in {time.perf_counter() - start:.0f}s")


def curves(run_dir: Positional[Path]) -> None:
    """Plot a run's training and held-out accuracy against updates into DIR/curves.png, and
    print the first update at which each held-out complexity reached 0.95."""
    from .evaluation.plotting import plot_curves
    from .training.run import read_metrics

    records = read_metrics(run_dir)
    evals = [r for r in records if "eval" in r]
    train = next((r["update"] for r in records if r["train_acc"] >= 0.95), None)
    print(f"training accuracy >= 0.95 first at update {train}")
    for c in (evals[0]["eval"] if evals else {}):
        reached = next((r["update"] for r in evals if r["eval"][c] >= 0.95), None)
        print(f"held-out complexity {c}: >= 0.95 first at update {reached}; "
              f"final {evals[-1]['eval'][c]:.3f}")
    print(f"wrote {plot_curves(records, Path(run_dir) / 'curves.png', str(run_dir))}")


COMMANDS = {"train": train, "frontier": frontier, "adaptive": adaptive, "curves": curves,
            "demo": demo}


def main(argv: list[str] | None = None) -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="loopformer")
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"loopformer: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
