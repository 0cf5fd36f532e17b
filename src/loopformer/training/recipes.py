"""Named training recipes: (task, preset) -> model config, training config.

"paper" follows the source paper's setting as far as DESIGN.md gives it; "quick" is the same
recipe cut down to run on a 2-core laptop CPU in minutes (fewer updates, a smaller data set).
"""

from __future__ import annotations

import dataclasses

from ..config import ModelConfig
from ..tasks import TASKS, Task, make_task, task_name
from .config import TrainConfig

# Chen 2026's graph model: d=128, 4 heads, FFN 256, one gated core block with LayerScale,
# ~205K parameters. Nodes attend by adjacency only, so no positions (rope=False).
GRAPH_MODEL = ModelConfig(vocab_size=27, d_model=128, n_heads=4, ffn_hidden=256, n_prelude=0,
                          n_core=1, n_coda=0, injection="gated", state_init="embed",
                          layer_scale_init=1e-4, causal=False, rope=False, max_seq_len=20,
                          mean_steps=8)
LOGIC_MODEL = ModelConfig(vocab_size=9, d_model=128, n_heads=4, ffn_hidden=256, n_prelude=1,
                          n_core=1, n_coda=0, injection="gated", state_init="embed",
                          layer_scale_init=1e-4, causal=False, max_seq_len=512, mean_steps=8)
SEQUENCE_MODEL = ModelConfig(d_model=128, n_heads=4, ffn_hidden=256, n_prelude=1, n_core=1,
                             n_coda=1, injection="gated", state_init="embed",
                             layer_scale_init=1e-4, max_seq_len=160, mean_steps=8)
# Family text: the core block alone, as in the graph model (no prelude or coda), so that the
# answer can only come from the loop; with a prelude and a coda the 0.3 model solved what one
# pass can and left the core near the identity. Weights drawn at std 0.06, no LayerScale: at
# 0.02 attention starts uniform, the queries get 1% of the values' gradient, and no model of
# ours (untied blocks too) started the name lookup the task needs (docs/results.md, family).
FAMILY_MODEL = SEQUENCE_MODEL.replace(vocab_size=52, causal=False, n_prelude=0, n_coda=0,
                                      max_seq_len=256, init_std=0.06, layer_scale_init=None)
# Chains: the core alone (see the recipe) with a one-token attention window: a step reads its
# left neighbour only, and no distance longer than in training appears on longer chains
# (without a window the model solved 9 hops and failed from 10; with a window of 2, 12 hops
# on one seed of two: docs/results.md).
CHAINS_MODEL = SEQUENCE_MODEL.replace(vocab_size=60, max_seq_len=32, n_prelude=0, n_coda=0,
                                      attention_window=1)

FAMILY_OPTIONS = {"relation_targets": True, "train_complexities": "1,2,3,4,5"}

RECIPES: dict[tuple[str, str], tuple[ModelConfig, TrainConfig]] = {
    ("graph", "paper"): (GRAPH_MODEL, TrainConfig(
        task="graph", updates=7500, batch_size=64, train_examples=12_000, lr=3e-4,
        depth="uniform", depth_low=5, depth_high=8, eval_every=500, checkpoint_every=500)),
    ("graph", "quick"): (GRAPH_MODEL, TrainConfig(
        task="graph", updates=1500, batch_size=64, train_examples=6_000, lr=1e-3,
        warmup_updates=100,
        depth="uniform", depth_low=5, depth_high=8, eval_every=250, checkpoint_every=250)),
    ("logic", "paper"): (LOGIC_MODEL, TrainConfig(
        task="logic", updates=6000, batch_size=64, train_examples=12_000, lr=3e-4,
        depth="uniform", depth_low=4, depth_high=16, eval_every=500, checkpoint_every=500)),
    # quick: every operand's value a target of its own (operand_targets: the rule is learned
    # about twice as fast), 100,000 expressions (8,000 overfit), batches grouped by length.
    ("logic", "quick"): (LOGIC_MODEL, TrainConfig(
        task="logic", task_options={"operand_targets": True}, updates=5000, batch_size=64,
        train_examples=100_000, lr=1e-3, depth="uniform", depth_low=4, depth_high=16,
        group_by_length=16, eval_steps=12, eval_every=250, checkpoint_every=250)),
    # Relation targets (each mention of a person labelled with its relation to A) and one-fact
    # texts beside depths 2-5: without the targets a plain transformer stays at chance too.
    ("family", "paper"): (FAMILY_MODEL, TrainConfig(
        task="family", task_options=dict(FAMILY_OPTIONS), updates=6000, batch_size=64,
        train_examples=100_000, lr=3e-4, depth="uniform", depth_low=4, depth_high=8,
        eval_every=500, checkpoint_every=500)),
    # quick: batches grouped by length (16 at a time), 1.5x faster updates, within 20 minutes.
    ("family", "quick"): (FAMILY_MODEL, TrainConfig(
        task="family", task_options=dict(FAMILY_OPTIONS), updates=3000, batch_size=64,
        train_examples=50_000, lr=1e-3, depth="uniform", depth_low=4, depth_high=8,
        group_by_length=16, eval_every=250, checkpoint_every=250)),
    # Loop-Think-Generalize: 200 entities, trained to 12 hops. Each example thinks one step
    # per hop and one more (depth "task"). The core alone, no prelude or coda: the entity a
    # step computes at a relation's position is then where the tied readout puts entities,
    # so the next position looks it up like an input entity. Enough distinct training chains
    # that memorising them is no way out (0.4: with 20,000 and a curriculum the model
    # memorised the 2-hop chains and never composed; docs/results.md). depth_mean: the mean
    # of the steps (the compute-matched baseline's depth).
    ("chains", "paper"): (CHAINS_MODEL.replace(vocab_size=210), TrainConfig(
        task="chains", task_options={"train_hops": 12}, updates=8000, batch_size=128,
        train_examples=200_000, lr=1e-3, depth="task", depth_mean=7.5, eval_every=250,
        checkpoint_every=500)),
    # quick: 50 entities, trained to 8 hops.
    ("chains", "quick"): (CHAINS_MODEL, TrainConfig(
        task="chains", task_options={"num_entities": 50, "train_hops": 8}, updates=3000,
        batch_size=128, train_examples=100_000, lr=1e-3, depth="task", depth_mean=5.5,
        eval_every=100, checkpoint_every=250)),
    # Grokking (Power et al. 2022 / Nanda et al. 2023): full batch, AdamW lr 1e-3,
    # weight decay 1.0, betas (0.9, 0.98). One core step: the looped part is not the point here.
    ("modarith", "paper"): (SEQUENCE_MODEL.replace(vocab_size=99, max_seq_len=8, n_prelude=0,
                                                   n_coda=0, layer_scale_init=None), TrainConfig(
        task="modarith", task_options={"modulus": 97, "train_fraction": 0.3}, updates=10_000,
        batch_size=100_000, lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_updates=10,
        min_lr_ratio=1.0, grad_clip=1e9, depth="fixed", depth_low=1, depth_high=1,
        depth_mean=1, eval_examples=100_000, eval_every=100, checkpoint_every=1000)),
}
# quick: d=64 instead of 128 (4x fewer FLOPs per update) and weight decay 3.0 instead of 1.0,
# so that grokking fits in minutes: at 1.0 held-out accuracy had only reached 0.18 after 3,500
# updates; at 3.0 it jumps between updates ~1,000 and ~2,250 (three seeds, docs/results.md).
RECIPES[("modarith", "quick")] = (
    RECIPES[("modarith", "paper")][0].replace(d_model=64, n_heads=4, ffn_hidden=256),
    dataclasses.replace(RECIPES[("modarith", "paper")][1], updates=2500, weight_decay=3.0,
                        eval_every=50))

# Text (Huginn's recipe): concat adapter, sandwich norm, noise state init, depth from the
# Poisson-lognormal with mean r, backprop through the last 8 steps. quick: a 128-wide model on
# 128-token windows with r = 4 (minutes on a CPU); paper: Huginn's shape at d = 768, r = 32.
TEXT_MODEL = ModelConfig(vocab_size=4096, d_model=128, n_heads=4, n_prelude=1, n_core=2,
                         n_coda=1, injection="concat", state_init="noise", norm="sandwich",
                         max_seq_len=129, mean_steps=4)
RECIPES[("text", "quick")] = (TEXT_MODEL, TrainConfig(
    task="text", updates=600, batch_size=16, lr=1e-3, warmup_updates=50, depth="poisson-lognormal",
    depth_low=1, depth_high=16, depth_mean=4, backprop_steps=8, eval_steps=4, eval_every=100,
    eval_examples=64, checkpoint_every=100, tokenizer_vocab_size=4096))
RECIPES[("text", "paper")] = (TEXT_MODEL.replace(
    vocab_size=32768, d_model=768, n_heads=12, n_kv_heads=4, n_prelude=2, n_core=4, n_coda=2,
    max_seq_len=1025, mean_steps=32), TrainConfig(
    task="text", updates=20_000, batch_size=64, lr=4e-4, warmup_updates=500,
    depth="poisson-lognormal", depth_low=1, depth_high=64, depth_mean=32, backprop_steps=8,
    eval_steps=32, eval_every=1000, eval_examples=256, checkpoint_every=1000,
    tokenizer_vocab_size=32768))

# Parity (Fan et al. 2024): steps tied to the input (n bits + 2), trained on n <= 12 (quick;
# the paper trains to 20), tested to 32. The core alone with a one-token attention window, as
# for chains: bit i reaches the answer only after n - i steps, so one bit per step is the only
# rule. Running targets (the parity so far at every bit) make that rule learnable, and up to
# 16 extra training steps teach a solved state to hold, and a fixed-point penalty (weight 3)
# keeps a position that waits for the parity from drifting; it spares each position's change at
# the step its parity is due (due_steps), so that it does not slow the parity down, and the lti
# injection (a decay below 1 on the state) keeps the waiting state from growing away after ~13
# steps as the gated core's did (docs/results.md). depth_mean is the
# mean of the task's steps (with depth_extra / 2: the compute-matched baseline's depth).
# lr 5e-4: at 1e-3 an earlier recipe diverged at update 881.
PARITY_MODEL = SEQUENCE_MODEL.replace(vocab_size=4, max_seq_len=66, n_prelude=0, n_coda=0,
                                      attention_window=1, injection="lti")
RECIPES[("parity", "quick")] = (PARITY_MODEL, TrainConfig(
    task="parity", task_options={"running_targets": True, "due_steps": True}, updates=1500,
    batch_size=64, train_examples=20_000, lr=5e-4, depth="task", depth_mean=8.5,
    depth_extra=16, fixed_point_weight=3.0, eval_every=100, checkpoint_every=250))
RECIPES[("parity", "paper")] = (PARITY_MODEL, TrainConfig(
    task="parity", task_options={"train_bits": 20, "running_targets": True, "due_steps": True},
    updates=10_000, batch_size=64, train_examples=50_000, lr=3e-4, depth="task",
    depth_mean=12.5, depth_extra=24, fixed_point_weight=3.0, eval_every=500,
    checkpoint_every=500))

# Two-hop composition (Wang et al. 2024): every atomic fact and phi two-hop queries per atomic
# fact, batch 512. The core alone (no prelude or coda) and a tied readout, so that the bridge
# entity a step computes lies where the readout (and so the input embedding) puts entities,
# and the next step can look it up like an input (docs/results.md, chains). A one-token
# attention window, as for chains: the answer's position sees the first relation's, not the
# head, so a two-hop answer must go through the bridge that position computes; with the whole
# query in view the model memorised its compositions and never generalised (ID 0.04). quick: 200
# entities, 20 relations, 10 facts each, phi 7.2, weight decay 1.0 (the pace of grokking;
# Wang et al.: 0.1: the OOD facts kept, no composition of them), every atomic fact 4 times
# (under weight decay 1.0 the model forgot 14% of the OOD facts, which only their atomic
# examples support); paper: Wang et al.'s 2,000 entities, 200 relations, 20 facts each.
COMPOSITION_MODEL = SEQUENCE_MODEL.replace(vocab_size=220, max_seq_len=4, n_prelude=0,
                                           n_coda=0, attention_window=1)
RECIPES[("composition", "quick")] = (COMPOSITION_MODEL, TrainConfig(
    task="composition", task_options={"inferred_ratio": 7.2, "atomic_repeat": 4},
    updates=8000, batch_size=512,
    lr=1e-3, weight_decay=1.0, min_lr_ratio=1.0, depth="uniform", depth_low=2, depth_high=6,
    eval_steps=4, eval_every=100, eval_examples=500, checkpoint_every=500))
RECIPES[("composition", "paper")] = (COMPOSITION_MODEL.replace(vocab_size=2200), TrainConfig(
    task="composition", task_options={"num_entities": 2000, "num_relations": 200,
                                      "facts_per_entity": 20, "ood_fraction": 0.05,
                                      "inferred_ratio": 7.2},
    updates=50_000, batch_size=512, lr=1e-4, weight_decay=0.1, depth="uniform", depth_low=2,
    depth_high=6, eval_steps=4, eval_every=1000, eval_examples=2000, checkpoint_every=1000))

PRESET_NAMES = ("paper", "quick")


def recipe(task: str, preset: str) -> tuple[ModelConfig, TrainConfig]:
    """The named recipe of a built-in task, or a task of your own ("module:Class") with its
    defaults over the generic recipe of its interface (task_recipe)."""
    if (task, preset) in RECIPES:
        return RECIPES[(task, preset)]
    if preset not in PRESET_NAMES or task in TASKS or task == "text":
        tasks = sorted({t for t, _ in RECIPES})
        raise ValueError(f"no recipe for task {task!r} with preset {preset!r}; tasks: {tasks} "
                         f"or package.module:ClassName, presets: {list(PRESET_NAMES)}")
    return task_recipe(make_task(task), preset)


# The generic start of a task without a named recipe, by interface: Chen 2026's small gated
# core (d 128, LayerScale 1e-4, U{4..12} steps), the paper preset longer and at a lower lr.
GENERIC_MODELS = {"graph": GRAPH_MODEL, "classifier": LOGIC_MODEL, "lm": SEQUENCE_MODEL}


def task_recipe(task: Task, preset: str) -> tuple[ModelConfig, TrainConfig]:
    """A task's default run: the generic model of its interface sized to the task (vocabulary,
    sequence length), then the task's own fields (Task.recipe)."""
    if task.interface not in GENERIC_MODELS:
        raise ValueError(f"task {task_name(task)!r} asks for unknown interface "
                         f"{task.interface!r}; choose one of {sorted(GENERIC_MODELS)}")
    width = max(task.vocab_size, task.num_classes) if task.interface == "lm" else \
        task.vocab_size
    model = GENERIC_MODELS[task.interface].replace(
        vocab_size=width, max_seq_len=task.max_len + (task.interface == "classifier"))
    quick = preset == "quick"
    train = TrainConfig(task=task_name(task), updates=1000 if quick else 5000, batch_size=64,
                        train_examples=8000 if quick else 12_000, lr=1e-3 if quick else 3e-4,
                        depth="uniform", depth_low=4, depth_high=12, eval_every=250,
                        checkpoint_every=250)
    own = task.recipe(preset)
    return (ModelConfig.from_dict({**model.to_dict(), **own.get("model", {})}),
            TrainConfig.from_dict({**train.to_dict(), **own.get("train", {})}))
