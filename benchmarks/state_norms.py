"""How large the recurrent state grows, per injection, at initialisation and after training.

    python -m benchmarks.state_norms [--updates 200] [--lrs 1e-3 5e-2]

Trains the graph task's quick recipe briefly with each injection (pre-norm blocks, and the LTI
update with sandwich blocks) at each learning rate, then runs 8, 64 and 512 core steps on held-out examples and prints the RMS
over tokens of the state's L2 norm after the last step. For the LTI update it also prints the
terms of its bound |s| <= (|B e| + |R|) / (1 - max A): the injected input, the residual
update and the largest decay.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from loopformer.model.observers import StateCollector
from loopformer.training.recipes import recipe
from loopformer.training.trainer import Trainer

from .common import print_table

STEPS = (8, 64, 512)
# (injection, state_init, norm placement)
VARIANTS = [("add", "zeros", "pre"), ("concat", "zeros", "pre"), ("lti", "embed", "pre"),
            ("gated", "embed", "pre"), ("lti", "embed", "sandwich")]
COLUMNS = ["injection", "norm", "trained at lr", *(f"|s| @{t}" for t in STEPS), "|B e|",
           "|R| at s_512", "1/(1-max A)", "max |W| core", "accuracy"]


def rms_norm_of(states: torch.Tensor, mask: torch.Tensor) -> float:
    norms = states.float().norm(dim=-1)[mask]
    return float(norms.pow(2).mean().sqrt())


@torch.no_grad()
def measure(trainer: Trainer) -> dict:
    model, task = trainer.model.eval(), trainer.task
    batch = task.collate(task.eval_set(task.train_complexities[-1], 64, seed=1))
    row = {}
    for steps in STEPS:
        collector = StateCollector()
        model(batch, steps, observers=[collector])
        x, ctx = model.embed_inputs(batch)
        row[f"|s| @{steps}"] = rms_norm_of(collector.states[-1], ctx.token_mask)
    core = model.backbone.core
    if model.backbone.cfg.injection == "lti":
        x, ctx = model.embed_inputs(batch)
        e = model.backbone.encode(x, ctx)
        injected = core.injection.input_gain.float() * e.float()
        s = collector.states[-1]
        stack_input = s + e
        residual = core.blocks(stack_input, ctx.at("core", 0, len(core.blocks))).float() \
            - stack_input.float()
        row["|B e|"] = rms_norm_of(injected, ctx.token_mask)
        row["|R| at s_512"] = rms_norm_of(residual, ctx.token_mask)
        row["1/(1-max A)"] = float(1 / (1 - core.injection.decay().max()))
    row["max |W| core"] = max(float(p.abs().max()) for p in core.parameters())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 5e-2])
    args = parser.parse_args()
    rows = []
    for injection, state_init, norm in VARIANTS:
        model_cfg, train_cfg = recipe("graph", "quick")
        model_cfg = model_cfg.replace(injection=injection, state_init=state_init, norm=norm)
        for lr in (None, *args.lrs):
            cfg = train_cfg.replace(updates=args.updates, lr=lr or train_cfg.lr,
                                    eval_every=args.updates, checkpoint_every=args.updates)
            with tempfile.TemporaryDirectory() as out:
                trainer = Trainer(model_cfg, cfg, out, progress=False, device="cpu")
                result = trainer.fit() if lr is not None else {}
                rows.append({"injection": injection, "norm": norm,
                             "trained at lr": lr or "init", **measure(trainer),
                             "accuracy": sum(result.values()) / len(result) if result else None})
            print(f"{injection} ({norm}) at lr {lr or 'init'}: |s| @512 = "
                  f"{rows[-1]['|s| @512']:.4g}", flush=True)
    print()
    print_table(rows, COLUMNS)

if __name__ == "__main__":
    main()
