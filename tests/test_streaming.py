"""Continuous batching with exits: every example gets what it gets in a batch of its own."""

import random

import pytest
import torch

from loopformer.evaluation.streaming import stream_answers
from loopformer.model.exits import ExitRule
from loopformer.tasks import make_task
from loopformer.tasks.interfaces import build_task_model
from loopformer.training.recipes import recipe

# Thresholds under which the tiny random model's examples (large initial weights, so that
# the readout moves) stop at different steps.
RULES = [ExitRule("kl", 3e-2), ExitRule("entropy-diff", 5e-2), ExitRule("kl", 3e-2, min_steps=4),
         ExitRule("argmax-stability", 2), ExitRule("kl-entropy", 3e-2, exit_entropy=10.0)]


def chains_model(**changes):
    task = make_task("chains", num_entities=20, train_hops=4)
    torch.manual_seed(0)
    cfg = recipe("chains", "quick")[0].replace(vocab_size=30, d_model=32, n_heads=2,
                                               ffn_hidden=64, layer_scale_init=None, init_std=0.3,
                                               **changes)
    rng = random.Random(0)
    examples = [task.sample(c, rng) for c in (1, 2, 3, 4, 2, 4, 1, 3, 4, 3, 2)]
    return task, build_task_model(task, cfg).eval(), examples


def assert_streams_as_alone(task, model, examples, rule: ExitRule) -> torch.Tensor:
    """Streamed 3 rows at a time, each example gets the steps and logits it gets alone; the
    examples stop at different steps (else the test would not see rows being refilled)."""
    logits, steps = stream_answers(model, task.collate(examples), rule, max_steps=9, width=3)
    for i, example in enumerate(examples):
        with torch.no_grad():
            alone = model(task.collate([example]), 9, exit_rule=rule)
        assert int(steps[i]) == int(alone.steps[0]), i
        torch.testing.assert_close(logits[i], alone.logits[-1][0], rtol=1e-4, atol=1e-5)
    assert len(set(steps.tolist())) > 1
    return steps


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.criterion}-{r.min_steps}")
@pytest.mark.parametrize("step_embedding", ["none", "learned"])
def test_each_example_streams_as_it_runs_alone(rule, step_embedding):
    task, model, examples = chains_model(step_embedding=step_embedding)
    steps = assert_streams_as_alone(task, model, examples, rule)
    assert int(steps.min()) >= rule.min_steps and int(steps.max()) <= 9


def test_a_rule_that_never_fires_stops_every_example_at_max_steps():
    task, model, examples = chains_model()
    batch = task.collate(examples)
    logits, steps = stream_answers(model, batch, ExitRule("kl", 0.0), max_steps=5, width=4)
    assert (steps == 5).all()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(batch, 5).logits[-1], rtol=1e-4, atol=1e-5)


def test_streaming_says_what_it_cannot_run():
    task, model, examples = chains_model()
    batch = task.collate(examples)
    with pytest.raises(ValueError, match="judges each token's state"):
        stream_answers(model, batch, ExitRule("latent-diff"), 8)
    _, with_adapters, _ = chains_model(step_lora_rank=2)
    with pytest.raises(ValueError, match="step_lora_rank"):
        stream_answers(with_adapters, batch, ExitRule("kl"), 8)


@pytest.mark.parametrize("name", ["graph", "logic"])  # pair readout; CLS classifier
def test_other_interfaces_stream_as_they_run_alone(name):
    task = make_task(name)
    torch.manual_seed(0)
    model = build_task_model(task, recipe(name, "quick")[0].replace(
        d_model=32, n_heads=2, ffn_hidden=64, layer_scale_init=None, init_std=0.3)).eval()
    rng, levels = random.Random(0), task.train_complexities
    examples = [task.sample(levels[i % len(levels)], rng) for i in range(9)]
    rule = ExitRule("kl", 3e-3)
    assert_streams_as_alone(task, model, examples, rule)
