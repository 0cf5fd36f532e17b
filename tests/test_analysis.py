"""The analysis pass: its per-step states and logit lens agree with separate runs of the model,
and `analyze` writes its files; the CLI on task and text runs is in test_cli / test_text."""

import json

import torch

from loopformer import ModelConfig
from loopformer.analysis.inspect import inspect
from loopformer.analysis.report import analyze
from loopformer.evaluation.scoring import accuracy_by_steps
from loopformer.model.observers import StateCollector
from loopformer.tasks import make_task
from loopformer.tasks.interfaces import build_task_model


def logic_model():
    torch.manual_seed(0)
    task = make_task("logic")
    cfg = ModelConfig(vocab_size=task.vocab_size, d_model=32, n_heads=4, n_prelude=1,
                      n_core=1, n_coda=1, injection="gated", state_init="embed", causal=False,
                      max_seq_len=64)
    return task, build_task_model(task, cfg).eval()


def test_states_and_lens_match_separate_runs(tmp_path):
    task, model = logic_model()
    examples = task.examples(10, [2, 3], seed=0)
    batches = [task.collate(examples[:5]), task.collate(examples[5:])]
    found = inspect(model, batches, steps=8)
    real = [int(b["attention_mask"].sum()) for b in batches]
    assert found.states.shape == (sum(real), 8, 32) and len(found.where) == sum(real)
    assert not found.token_level
    first = found.where[0]
    for t in (1, 4, 8):  # the token's state after t steps = the final state of a t-step run
        collector = StateCollector()
        with torch.no_grad():
            model(batches[0], t, observers=[collector])
        expected = collector.states[-1][first["example"], first["position"]]
        torch.testing.assert_close(found.states[0, t - 1], expected)
    by_steps = accuracy_by_steps(model, task.collate(examples), list(range(1, 9)))
    assert found.lens["accuracy"] == [by_steps[s] for s in range(1, 9)]
    assert all(e >= 0 for e in found.lens["entropy"]) and len(found.lens["loss"]) == 8

    summary = analyze(model, batches, 8, tmp_path / "analysis", "logic")
    stored = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert stored["counts"] == summary["counts"] and sum(stored["counts"].values()) == sum(real)
    assert {"label", "relative_step", "period", "drift", "complexity"} <= set(
        stored["per_token"][0])
    assert len(stored["convergence"]["median"]) == 7
    for name in ("trajectories.png", "lens.png"):
        assert (tmp_path / "analysis" / name).stat().st_size > 5000
