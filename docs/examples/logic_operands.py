"""How well a logic run with operand targets evaluates the subexpressions, by their height
(docs/results.md, nested logic).

A run trained with `operand_targets` reads, at the last symbol of every operand, the value of
the outermost operand ending there. A model that evaluates bottom-up gets the low operands
right first and each level with one more step. The script prints, per depth and step count,
the share of held-out operands read right by the operand's height (literals 0; a NOT, or a
chain of one operator, one more than its highest operand; parentheses add nothing), and the
answer's accuracy at the CLS token.

    python logic_operands.py runs/logic-quick --depths 8 14 --steps 4 12 24
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from loopformer.evaluation.scoring import is_correct
from loopformer.tasks.logic import operand_heights, operand_values
from loopformer.training.run import load_run, training_keys

HEIGHT_BINS = ((0, 0), (1, 1), (2, 2), (3, 4), (5, 6), (7, 9), (10, 99))


@torch.no_grad()
def by_height(task, model, examples: list, steps: int) -> tuple[dict, float]:
    counts = defaultdict(lambda: [0, 0])
    batch = task.collate(examples)
    out = model(batch, steps)
    read = out.position_logits.argmax(-1)
    for row, ex in enumerate(examples):
        symbols = read[row, 1:1 + len(ex.text)].tolist()  # after the CLS token
        for value, height, guess in zip(operand_values(ex.text), operand_heights(ex.text),
                                        symbols):
            if value != -100:
                low_high = next(b for b in HEIGHT_BINS if b[0] <= height <= b[1])
                counts[low_high][0] += int(guess == value)
                counts[low_high][1] += 1
    answer = float(is_correct(out.logits[-1], batch["label"]).float().mean())
    return counts, answer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a logic run trained with operand_targets")
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 14])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 12, 24])
    parser.add_argument("--examples", type=int, default=400, help="held-out, per depth")
    args = parser.parse_args(argv)
    task, model, _, train_cfg = load_run(args.run)
    if task.name != "logic" or not task.operand_targets:
        parser.error(f"{args.run} is not a logic run with operand_targets")
    model.eval()
    exclude = training_keys(task, train_cfg)
    print("operands read right by height (operands in brackets), and the answer")
    print("depth | steps | " + " | ".join(f"{lo}" if lo == hi else f"{lo}-{hi}"
                                         for lo, hi in HEIGHT_BINS) + " | answer")
    for depth in args.depths:
        examples = task.eval_set(depth, args.examples, train_cfg.seed, exclude)
        for steps in args.steps:
            counts, answer = by_height(task, model, examples, steps)
            cells = [f"{counts[b][0] / counts[b][1]:.2f} ({counts[b][1]})" if counts[b][1]
                     else "-" for b in HEIGHT_BINS]
            print(f"{depth} | {steps} | " + " | ".join(cells) + f" | {answer:.2f}")


if __name__ == "__main__":
    main()
