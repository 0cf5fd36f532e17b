"""Wall time of adaptive depth (an exit criterion) against the fixed depth that reaches the
same accuracy, on a trained run: for a text run prefill and token-by-token decoding, for a task
run a shuffled mix of its held-out complexities in batches (exited examples leave the batch)
and streamed (continuous batching: an exited example's row goes to the next one at once), at
batch 1 and 16.

Accuracy is next-token top-1 accuracy on validation windows. The matched fixed depth is the
smallest step count whose accuracy is at least the adaptive one's. Decoding is teacher-forced
(each call feeds the true next token with the KV cache: exact at the fixed depth, the latest
fallback under exits), so that both settings decode the same tokens and their accuracy is
measured on them.

For a task run, accuracy is the answer's on held-out examples of every training complexity
(or --complexities) mixed together, so one fixed depth must serve the deepest of them while
an exit can stop each example at its own depth.

    python -m benchmarks.adaptive runs/text-quick --threshold 5e-4 1e-2
    python -m benchmarks.adaptive runs/chains-w1 --threshold 1e-3
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch

from loopformer import KVCache
from loopformer.evaluation.scoring import is_correct
from loopformer.evaluation.streaming import stream_answers
from loopformer.model.exits import ExitRule
from loopformer.training.run import load_config, load_run, training_keys

from .common import measure, print_table, text_run_windows


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


@torch.no_grad()
def prefill(lm, ids: torch.Tensor, steps: int, exits: dict) -> tuple[torch.Tensor, float]:
    out = lm(ids, steps, generator=torch.Generator().manual_seed(0), **exits)
    return out.logits, float(out.steps.float().mean())


@torch.no_grad()
def decode(lm, ids: torch.Tensor, prompt: int, steps: int,
           exits: dict) -> tuple[torch.Tensor, float]:
    """Logits for positions prompt-1 .. end-1, fed one token per call after the prompt."""
    cache = KVCache(mode="latest" if exits else "exact")
    generator = torch.Generator().manual_seed(0)
    out = lm(ids[:, :prompt], steps, past_key_values=cache, use_cache=True,
             generator=generator, **exits)
    logits, spent = [out.logits[:, -1]], []
    for t in range(prompt, ids.shape[1]):
        out = lm(ids[:, t:t + 1], steps, past_key_values=cache, use_cache=True,
                 generator=generator, **exits)
        logits.append(out.logits[:, -1])
        spent.append(out.steps.float().mean())
    return torch.stack(logits, 1), float(torch.stack(spent).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--criterion", default="kl")
    parser.add_argument("--threshold", type=float, nargs="+", default=[None],
                        help="exit thresholds to measure (default: the criterion's)")
    parser.add_argument("--max-steps", type=int, default=16)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--complexities", type=int, nargs="+", default=None,
                        help="task runs: the held-out complexities to mix (default: trained)")
    parser.add_argument("--examples", type=int, default=64,
                        help="task runs: held-out examples per complexity")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if load_config(args.run)[1].task != "text":
        return task_main(args)
    model, _, windows = text_run_windows(args.run, max(args.windows, *args.batch))
    lm = model.lm
    ids, labels = windows[:, :-1], windows[:, 1:]
    print(f"{args.run}: {len(ids)} validation windows of {ids.shape[1]} tokens; "
          f"{torch.get_num_threads()} threads")

    by_depth = {t: accuracy(prefill(lm, ids, t, {})[0], labels)
                for t in range(1, args.max_steps + 1)}
    print("fixed depth accuracy: " + ", ".join(f"{t}: {a:.4f}" for t, a in by_depth.items()))
    rows = []
    for threshold in args.threshold:
        exits = dict(exit_criterion=args.criterion, exit_threshold=threshold)
        logits, steps = prefill(lm, ids, args.max_steps, exits)
        acc = accuracy(logits, labels)
        matched = min((t for t, a in by_depth.items() if a >= acc), default=args.max_steps)
        print(f"{args.criterion} < {threshold}: accuracy {acc:.4f} at {steps:.2f} steps/token; "
              f"fixed depth of equal accuracy: {matched}", flush=True)
        for batch in args.batch:
            part, part_labels = ids[:batch], labels[:batch]
            settings = [(f"fixed {matched}", matched, {}),
                        (f"{args.criterion} < {threshold}", args.max_steps, exits)]
            for mode in ("prefill", "decode"):
                times = {}
                for name, depth, options in settings:
                    if mode == "prefill":
                        run = lambda: prefill(lm, part, depth, options)
                        tokens, target = part.numel(), part_labels
                    else:
                        run = lambda: decode(lm, part, args.prompt, depth, options)
                        tokens = batch * (part.shape[1] - args.prompt)
                        target = part_labels[:, args.prompt - 1:]
                    logits, spent = run()
                    timing = measure(run, repeats=args.repeats, warmup=0)
                    times[name] = timing["median_s"]
                    rows.append({"mode": mode, "batch": batch, "depth": name,
                                 "accuracy": accuracy(logits, target), "steps/token": spent,
                                 "tok/s": tokens / timing["median_s"],
                                 "speedup": times[settings[0][0]] / timing["median_s"]})
                    print(f"  {mode} batch {batch} {name}: {tokens / timing['median_s']:.0f} "
                          f"tok/s", flush=True)
    print_table(rows, ["mode", "batch", "depth", "accuracy", "steps/token", "tok/s", "speedup"])


@torch.no_grad()
def answer_accuracy(model, batches: list[dict], steps: int, rule: ExitRule | None):
    """Accuracy and mean steps per example over the batches, under a fixed depth or a rule."""
    correct, spent, n = 0, 0.0, 0
    for batch in batches:
        out = model(batch, steps, exit_rule=rule)
        correct += int(is_correct(out.logits[-1], batch["label"]).sum())
        spent += float(out.steps.float().sum())
        n += len(batch["label"])
    return correct / n, spent / n


@torch.no_grad()
def streamed_accuracy(model, batch: dict, rule: ExitRule, max_steps: int, width: int):
    """Accuracy and mean steps per example with continuous batching: `width` rows in the
    loop, an exited example's row taken by the next one at once."""
    logits, steps = stream_answers(model, batch, rule, max_steps, width)
    return float(is_correct(logits, batch["label"]).float().mean()), float(steps.float().mean())


def task_main(args) -> None:
    task, model, _, train_cfg = load_run(args.run)
    exclude = training_keys(task, train_cfg)
    complexities = args.complexities or task.train_complexities
    examples = [ex for c in complexities
                for ex in task.eval_set(c, args.examples, train_cfg.seed, exclude)]
    random.Random(0).shuffle(examples)  # every batch mixes the complexities

    def batches(size: int) -> list[dict]:
        return [task.collate(examples[i:i + size]) for i in range(0, len(examples), size)]

    print(f"{args.run}: {len(examples)} held-out examples of complexities "
          f"{list(complexities)}, mixed; {torch.get_num_threads()} threads")
    everything = batches(256)
    whole = task.collate(examples)
    by_depth = {t: answer_accuracy(model, everything, t, None)[0]
                for t in range(1, args.max_steps + 1)}
    print("fixed depth accuracy: " + ", ".join(f"{t}: {a:.4f}" for t, a in by_depth.items()))
    rows = []
    for threshold in args.threshold:
        rule = ExitRule(args.criterion, threshold)
        acc, steps = answer_accuracy(model, everything, args.max_steps, rule)
        matched = min((t for t, a in by_depth.items() if a >= acc), default=args.max_steps)
        print(f"{args.criterion} < {rule.threshold}: accuracy {acc:.4f} at {steps:.2f} steps per "
              f"example; fixed depth of equal accuracy: {matched}", flush=True)
        for size in args.batch:
            part = batches(size)
            name = f"{args.criterion} < {rule.threshold}"
            settings = {f"fixed {matched}": lambda: answer_accuracy(model, part, matched, None),
                        name: lambda: answer_accuracy(model, part, args.max_steps, rule)}
            if size > 1:  # (one row streamed is the batch-1 loop with the inputs embedded
                # together ahead of time: not what batch 1 means)
                settings[f"{name}, streamed"] = lambda: streamed_accuracy(
                    model, whole, rule, args.max_steps, size)
            results = {name: run() for name, run in settings.items()}
            times = {name: [] for name in settings}
            for _ in range(args.repeats):  # in turns, so that the machine's drift cancels
                for name, run in settings.items():
                    times[name].append(measure(run, repeats=1, warmup=0)["median_s"])
            fixed_s = statistics.median(times[f"fixed {matched}"])
            for name, (accuracy_here, spent) in results.items():
                median_s = statistics.median(times[name])
                rows.append({"batch": size, "depth": name, "accuracy": accuracy_here,
                             "steps/example": spent, "examples/s": len(examples) / median_s,
                             "speedup": fixed_s / median_s})
    print_table(rows, ["batch", "depth", "accuracy", "steps/example", "examples/s", "speedup"])


if __name__ == "__main__":
    main()
