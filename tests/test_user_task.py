"""A task of your own (docs/tasks.md, docs/examples/brackets.py): trained and evaluated from
the command line as "module:Class", and from Python with a task object and no run directory;
per-example thinking steps from the task (depth "task")."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.cli import main
from loopformer.model.depth import Depth
from loopformer.tasks import make_task, task_name
from loopformer.training.recipes import recipe
from loopformer.training.trainer import Trainer

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def loopformer(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    done = subprocess.run([sys.executable, "-m", "loopformer", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_user_task_trains_and_evaluates_from_the_command_line(tmp_path, monkeypatch, capsys):
    """Trained by the command in a fresh process; evaluated by the commands in this one."""
    run = tmp_path / "run"
    loopformer("train", "--task", "brackets:Brackets", "--out", str(run), "--updates", "4",
               "--train.train-examples", "200", "--no-progress", "--threads", "1", cwd=tmp_path)
    stored = json.loads((run / "config.json").read_text())
    assert stored["train"]["task"] == "brackets:Brackets"
    assert stored["model"]["d_model"] == 64  # the task's own defaults over the generic recipe
    monkeypatch.syspath_prepend(str(EXAMPLES))
    main(["frontier", str(run), "--steps", "1,3", "--examples", "20"])
    assert "brackets: accuracy by complexity" in capsys.readouterr().out
    assert json.loads((run / "frontier.json").read_text())["steps"] == [1, 3]
    main(["curves", str(run)])


def test_a_task_object_trains_without_a_run_directory(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)
    task = make_task("brackets:Brackets")
    assert task_name(task) == "brackets:Brackets"
    model_cfg, cfg = recipe("brackets:Brackets", "quick")
    cfg = cfg.replace(updates=3, train_examples=100, eval_every=3, eval_examples=16)
    trainer = Trainer(model_cfg, cfg, None, progress=False, task=task)
    result = trainer.fit()
    assert trainer.cfg.task == "brackets:Brackets" and len(trainer.history) == 3
    assert set(result) <= set(task.train_complexities) and not list(tmp_path.iterdir())


def test_depth_from_the_task_in_training_and_evaluation():
    """Parity asks for bits + 2 steps: each micro-batch's rows run their own counts, and the
    periodic evaluation uses them too."""
    model_cfg, cfg = recipe("parity", "quick")
    model_cfg = model_cfg.replace(d_model=32, n_heads=2, ffn_hidden=64)
    cfg = cfg.replace(updates=2, batch_size=8, train_examples=64, eval_every=2,
                      eval_examples=8, task_options={"train_bits": 6}, depth_extra=0)
    trainer = Trainer(model_cfg, cfg, None, progress=False, grad_accum=2)
    batch = trainer.batch(0)
    assert trainer.depth(0, batch).rows.tolist() == (batch["complexity"] + 2).tolist()
    seen = []
    original = trainer.train_model.forward

    def spy(part, depth, **kw):  # training passes a Depth, evaluation the (B,) steps
        rows = depth.rows if isinstance(depth, Depth) else depth
        seen.append((part["complexity"].tolist(), rows.tolist(), isinstance(depth, Depth)))
        return original(part, depth, **kw)

    trainer.train_model.forward = spy
    result = trainer.fit()
    for complexity, rows, _ in seen:
        assert rows == [c + 2 for c in complexity]
    assert sum(training for *_, training in seen) == 2 * 2 and set(result) <= set(range(1, 7))
    assert all(isinstance(v, float) for v in result.values())


def test_extra_training_steps_beyond_the_task_count():
    """depth_extra: each training example runs U{0..k} more steps than its task asks, drawn by
    (seed, update) so that every rank and micro-batch split agrees; micro-batches get their
    own rows of the draw."""
    model_cfg, cfg = recipe("parity", "quick")
    model_cfg = model_cfg.replace(d_model=32, n_heads=2, ffn_hidden=64)
    cfg = cfg.replace(updates=1, batch_size=16, train_examples=64, depth_extra=6,
                      task_options={"train_bits": 6})
    trainer = Trainer(model_cfg, cfg, None, progress=False, grad_accum=2)
    batch = trainer.batch(0)
    rows = trainer.depth(0, batch).rows
    extra = rows - (batch["complexity"] + 2)
    assert 0 <= int(extra.min()) and int(extra.max()) <= 6 and len(set(extra.tolist())) > 1
    assert torch.equal(rows, trainer.depth(0, batch).rows)
    assert not torch.equal(rows, trainer.depth(1, batch).rows)
    seen = []
    original = trainer.train_model.forward
    trainer.train_model.forward = lambda part, depth, **kw: (
        seen.append(depth.rows), original(part, depth, **kw))[1]
    trainer.accumulate_gradients(batch, trainer.depth(0, batch))
    assert torch.equal(torch.cat(seen), rows)
    with pytest.raises(ValueError, match="depth_extra"):
        cfg.replace(depth="uniform")


def test_the_fixed_depth_baseline_of_a_task_depth_recipe():
    from loopformer.train_cli import parse_train_flags

    flags, _ = parse_train_flags(["--task", "parity", "--baseline", "compute"])
    # the mean of the task's steps (8.5) and half the extra training steps (16 / 2)
    assert flags.model.core == "fixed" and flags.model.fixed_depth == round(8.5 + 8)
    assert flags.train.depth == "fixed" and flags.train.depth_extra == 0


def test_task_options_on_the_command_line_go_over_the_recipes():
    """A preset with task options of its own still takes --train.task-options KEY VALUE ...:
    the given pairs are added to, or replace, the recipe's; "true" and "false" are booleans
    in any case, and a list-valued option takes numbers separated by commas."""
    from loopformer.train_cli import parse_train_flags

    flags, _ = parse_train_flags(["--task", "composition", "--train.task-options",
                                  "entity_targets", "True", "inferred_ratio", "3.6"])
    assert flags.train.task_options == {"inferred_ratio": 3.6, "atomic_repeat": 4,
                                        "entity_targets": True}
    flags, _ = parse_train_flags(["--task", "parity"])
    assert flags.train.task_options == {"running_targets": True, "due_steps": True}
    assert make_task("parity", running_targets="true").running_targets is True
    assert make_task("parity", running_targets="False").running_targets is False
    with pytest.raises(ValueError, match="running_targets"):
        make_task("parity", running_targets="yes")
    # list-valued options: numbers separated by commas
    flags, _ = parse_train_flags(["--task", "family", "--train.task-options",
                                  "train_complexities", "1,2,3"])
    task = make_task("family", **flags.train.task_options)
    assert task.train_complexities == (1, 2, 3)
    assert make_task("family", train_complexities="[4, 5]").train_complexities == (4, 5)
    flags, _ = parse_train_flags(["--task", "family", "--train.task-options",
                                  "train_complexities", "1"])  # one number: parsed as an int
    assert make_task("family", **flags.train.task_options).train_complexities == (1,)
    with pytest.raises(ValueError, match="numbers separated by commas"):
        make_task("family", train_complexities="two,three")


def test_the_matching_probes_label_what_they_say(monkeypatch):
    """docs/examples/matching.py (the name-matching skill the family task needs, alone):
    labels checked from the tokens, and its reference transformer runs."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from matching import DOT, FIRST_NAME, SEP, Membership, PairBinding

    for size in (2, 20):
        examples = make_task("matching:Membership").examples(200, [size], seed=1)
        for ex in examples:
            names, query = ex.tokens[:-2], ex.tokens[-1]
            assert ex.tokens[-2] == SEP and len(set(names)) == size
            assert ex.label == (query in names) and min(ex.tokens) >= SEP
        assert 0.4 < sum(ex.label for ex in examples) / 200 < 0.6
    binding = PairBinding(targets="partner")
    bound = binding.examples(200, [2, 6], seed=2)
    for ex in bound:
        text, (a, b) = ex.tokens[:-4], ex.tokens[-3:-1]
        facts = [set(text[i:i + 2]) for i in range(0, len(text), 3)]
        assert len(facts) == ex.complexity and a in set(text) and b in set(text)
        assert ex.label == ({a, b} in facts) and min(a, b) >= FIRST_NAME
        partners = [FIRST_NAME + t for t in ex.targets if t != -100]  # a's, then b's
        assert [{name, partner} in facts for name, partner in zip((a, b), partners)] == [1, 1]
    labels = binding.collate(bound)["position_labels"]
    assert labels[0, 1:1 + len(bound[0].targets)].tolist() == list(bound[0].targets)
    assert (labels != -100).sum() == 2 * len(bound)
    for ex in PairBinding(targets="mention").examples(50, [3], seed=2):  # same texts, flags
        a, b = ex.tokens[-3:-1]
        assert [t for t in ex.targets if t != -100] == \
            [{a: 0, b: 1}.get(t, 2) for t in ex.tokens[:-4] if t != DOT]
    with pytest.raises(ValueError, match="partner or mention"):
        PairBinding(targets="both")
    assert Membership().collate(examples)["input_ids"].shape == (200, 2 + 20 + 1)
    with pytest.raises(ValueError, match="number of facts"):
        PairBinding().check_complexity(1)
    script = subprocess.run([sys.executable, str(EXAMPLES / "matching.py"), "--task",
                             "pair-binding", "--size", "3", "--updates", "2",
                             "--targets", "mention"],
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    assert "update 2: loss" in script.stdout
    family = subprocess.run([sys.executable, str(EXAMPLES / "matching.py"), "--task", "family",
                             "--size", "1", "--updates", "1", "--targets", "partner"],
                            capture_output=True, text=True, timeout=120)
    assert family.returncode == 2 and "does not belong to --task family" in family.stderr
    family = subprocess.run([sys.executable, str(EXAMPLES / "matching.py"), "--task", "family",
                             "--size", "1", "--updates", "1", "--targets", "mention"],
                            capture_output=True, text=True, timeout=120)
    assert family.returncode == 0 and "update 1: loss" in family.stdout, family.stderr


def test_init_scale_measures_attention_at_the_start(monkeypatch, capsys):
    """docs/examples/init_scale.py: larger initial weights give more peaked attention and a
    larger share of the gradient to the queries; the patched attention is restored."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import init_scale
    import loopformer.model.attention as attention

    before = attention.attend
    init_scale.main(["--stds", "0.02", "0.1", "--examples", "8", "--steps", "2"])
    assert attention.attend is before
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 0.")]
    entropy, share = [[float(row[i]) for row in rows] for i in (1, 8)]
    assert len(rows) == 2 and 0.99 < entropy[0] <= 1.0 and entropy[1] < entropy[0]
    assert share[1] > 3 * share[0]


def test_composition_parts_splits_ood_failures_into_facts_and_composing(monkeypatch):
    """docs/examples/composition_parts.py, on a stand-in model that knows every fact but a
    chosen set and composes whatever it knows: OOD queries with both facts known are all
    right, the others all wrong, and the shares match a count over the facts."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import composition_parts
    from types import SimpleNamespace

    task = make_task("composition", num_entities=60, num_relations=8, facts_per_entity=4,
                     ood_fraction=0.2, inferred_ratio=2.0)
    E = task.num_entities
    forgotten = set(sorted(task.ood_facts)[::3])

    def walk(tokens):
        entity = tokens[0]
        for r in tokens[1:]:
            if (entity, r - E) in forgotten:
                return (task.facts[entity, r - E] + 1) % E  # a wrong entity
            entity = task.facts[entity, r - E]
        return entity

    def model(batch, steps):
        rows = [[t for t, m in zip(ids, mask) if m] for ids, mask in
                zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())]
        answers = torch.tensor([walk(row) for row in rows])
        return SimpleNamespace(logits=[torch.nn.functional.one_hot(answers, task.vocab_size)
                                       .float()])

    found = composition_parts.parts(task, model, steps=4)
    known = [not ({(q.head, q.relations[0]),
                   (task.facts[q.head, q.relations[0]], q.relations[1])} & forgotten)
             for q in task.ood_queries]
    assert 0 < sum(known) < len(known)
    assert found["both facts known"] == pytest.approx(sum(known) / len(known))
    assert found["OOD | both known"] == 1.0 and found["OOD | not both"] == 0.0
    assert found["atomic ID"] == found["two-hop ID"] == 1.0
    assert found["atomic OOD"] == pytest.approx(1 - len(forgotten) / len(task.ood_facts))
