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
from .files import DirectoryInUse, write_json_atomic
from .model.lm import LoopLM
from .text_cli import export, generate, perplexity
from .train_cli import TrainFlags, train
from .training.trainer import TrainingDiverged


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


def set_threads(threads: int | None) -> None:
    if threads is not None:
        require_positive(threads=threads)
        torch.set_num_threads(threads)


def require_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers such as 1,2,3, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} needs integers >= 1, got {text!r}")
    return values


def _step_list(text: str) -> list[int | str]:
    """--steps of frontier: integers, and "task" for each example's own count."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError(f"--steps needs integers >= 1 or 'task', got {text!r}")
    return [n if n == "task" else _int_list(n, "--steps")[0] for n in names]


def frontier(run_dir: Positional[Path], steps: str = "1,2,3,5,8,12,15,20",
             complexities: str | None = None, examples: int = 500,
             threads: int | None = None) -> None:
    """Evaluate a trained run on every (complexity, steps) pair; write frontier.json/.png.

    --steps may name "task" as a column: every example runs the steps its task asks for
    (e.g. parity: bits + 2)."""
    from .evaluation.plotting import plot_frontier
    from .evaluation.scoring import format_grid, frontier_grid
    from .training.run import load_run, training_keys

    set_threads(threads)
    require_positive(examples=examples)
    step_list = _step_list(steps)
    task, model, model_cfg, train_cfg = load_run(run_dir)
    levels = _int_list(complexities, "--complexities") if complexities else \
        list(task.test_complexities)
    for c in levels:
        task.check_complexity(c)
    start = time.perf_counter()
    levels, grid, counts = frontier_grid(task, model, levels, step_list, examples,
                                         train_cfg.seed, training_keys(task, train_cfg))
    kind = "fixed-depth baseline" if model_cfg.core == "fixed" else "recurrent"
    json_path, png_path = Path(run_dir) / "frontier.json", Path(run_dir) / "frontier.png"
    write_json_atomic(json_path, {"task": task.name,
                                  "train_complexities": list(task.train_complexities),
                                  "complexities": levels, "steps": step_list,
                                  "examples": counts, "accuracy": grid})
    plot_frontier(png_path, levels, step_list, grid, task.train_complexities,
                  f"{task.name} ({kind})")
    print(f"{task.name}: accuracy by complexity (rows) and thinking steps (columns); "
          f"trained on {list(task.train_complexities)}; held-out examples per row (none "
          f"in the training set): {dict(zip(levels, counts))}")
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
    from .training.run import load_run, training_keys

    set_threads(threads)
    require_positive(examples=examples, max_steps=max_steps, min_steps=min_steps)
    if min_steps > max_steps:
        raise ValueError(f"--min-steps {min_steps} exceeds --max-steps {max_steps}")
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
    task, model, _, train_cfg = load_run(run_dir)
    levels = _int_list(complexities, "--complexities") if complexities else \
        list(task.test_complexities)
    start = time.perf_counter()
    table = adaptive_table(task, model, levels, chosen, max_steps, examples, train_cfg.seed,
                           min_steps, exit_entropy, exclude=training_keys(task, train_cfg))
    write_json_atomic(Path(run_dir) / "adaptive.json", table)
    print(f"{task.name}: best fixed-step accuracy vs exit criteria (max {max_steps} steps, "
          f"{examples} examples per row)")
    print(format_adaptive(table))
    print(f"wrote {Path(run_dir) / 'adaptive.json'} in {time.perf_counter() - start:.0f}s")


def curves(run_dir: Positional[Path]) -> None:
    """Plot a run's training and held-out accuracy against updates into DIR/curves.png, and
    print the first update at which each held-out complexity (or named set: composition's
    train / id / ood / ood_atomic) reached 0.95."""
    from .evaluation.plotting import eval_label, plot_curves
    from .training.run import read_metrics

    records = read_metrics(run_dir)
    evals = [r for r in records if "eval" in r]
    train = next((r["update"] for r in records if r["train_acc"] >= 0.95), None)
    print(f"training accuracy >= 0.95 first at update {train}")
    for c in (evals[0]["eval"] if evals else {}):
        reached = next((r["update"] for r in evals if r["eval"][c] >= 0.95), None)
        print(f"{eval_label(c)}: >= 0.95 first at update {reached}; "
              f"final {evals[-1]['eval'][c]:.3f}")
    print(f"wrote {plot_curves(records, Path(run_dir) / 'curves.png', str(run_dir))}")


def analyze(run_dir: Positional[Path], examples: int = 16, steps: int = 32,
            out: Path | None = None, threads: int | None = None) -> None:
    """Look inside the loop of a trained run (task or text): every real token's state after
    each of --steps core steps, its trajectory class (fixed_point / orbit / slider / other,
    loopformer.analysis.classify_trajectory), the logit lens (the readout after every step)
    and the state's convergence; writes analysis.json, trajectories.png and lens.png into
    --out (default RUN/analysis).

    Args:
        examples: held-out examples (spread over the task's test complexities) or validation
            windows (text).
        steps: core steps to run (at least 8).
    """
    from .analysis.report import analyze as write_analysis
    from .analysis.trajectory import MIN_STEPS
    from .evaluation.scoring import eval_batches
    from .training.run import load_config, load_run, load_text_run, training_keys
    from .training.sources import TokenSource

    set_threads(threads)
    require_positive(examples=examples)
    if steps < MIN_STEPS:
        raise ValueError(f"--steps must be >= {MIN_STEPS} to judge a trajectory, got {steps}")
    _, train_cfg = load_config(run_dir)
    if train_cfg.task == "text":
        model, _, model_cfg, train_cfg = load_text_run(run_dir)
        source = TokenSource(train_cfg, model_cfg, run_dir)
        source.open(run_dir)
        batches, name = source.val_batches(examples), "text"
    else:
        task, model, model_cfg, train_cfg = load_run(run_dir)
        levels = list(task.test_complexities)
        found = eval_batches(task, levels, max(1, examples // len(levels)), train_cfg.seed,
                             training_keys(task, train_cfg))
        batches, name = list(found.values()), task.name
    out = Path(out) if out is not None else Path(run_dir) / "analysis"
    start = time.perf_counter()
    summary = write_analysis(model, batches, steps, out, f"{name} ({run_dir})")
    metric = summary["lens_metric"]
    print(f"{name}: {summary['tokens']} token trajectories over {steps} steps: "
          + ", ".join(f"{c} {n}" for c, n in summary["counts"].items()))
    print(f"logit lens ({metric}, entropy) and median relative state change by step:")
    change = [float("nan"), *summary["convergence"]["median"]]
    for t in range(steps):
        print(f"{t + 1:>4} {summary['lens'][metric][t]:>8.4f} {summary['lens']['entropy'][t]:>8.4f}"
              f" {change[t]:>10.2e}")
    print(f"wrote {out}/analysis.json, trajectories.png and lens.png in "
          f"{time.perf_counter() - start:.0f}s")


COMMANDS = {"train": TrainFlags, "frontier": frontier, "adaptive": adaptive, "curves": curves,
            "perplexity": perplexity, "generate": generate, "export": export, "demo": demo,
            "analyze": analyze}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["train"]:  # its defaults depend on its own --task/--preset/--config
            train(argv[1:])
        else:
            tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="loopformer")
    except (ValueError, OSError, DirectoryInUse, TrainingDiverged) as error:
        print(f"loopformer: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
