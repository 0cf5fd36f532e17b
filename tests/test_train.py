import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from loopformer import Depth
from loopformer.training import checkpoint as ckpt
from loopformer.training.config import TrainConfig
from loopformer.training.depth import sample_depth
from loopformer.training.recipes import GRAPH_MODEL, recipe
from loopformer.training.run import load_run
from loopformer.training.loss import fixed_point_weight_at, loss_and_accuracy
from loopformer.model.observers import StepChange
from loopformer.training.trainer import Trainer

SMALL_GRAPH = GRAPH_MODEL.replace(d_model=32, ffn_hidden=64)


def small_config(**changes) -> TrainConfig:
    base = dict(task="graph", updates=6, batch_size=8, train_examples=64, eval_examples=16,
                eval_every=3, checkpoint_every=3, warmup_updates=2, lr=3e-3, depth_low=2,
                depth_high=4)
    base.update(changes)
    return TrainConfig(**base)


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    straight = Trainer(SMALL_GRAPH, small_config(), tmp_path / "a", progress=False)
    straight.fit()

    first = Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path / "b", progress=False)
    first.fit()
    # As if killed after logging update 4 but before its checkpoint.
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"update": 4, "loss": 0.0}) + "\n")
    # The second process reads the stored config but runs to the full length.
    resumed = Trainer(SMALL_GRAPH, small_config(), tmp_path / "b", progress=False)
    resumed.fit(resume=True)
    assert resumed.update == 6
    for name, value in params(straight.model).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["update"] for l in lines] == list(range(1, 7))


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path, progress=False)
    trainer.fit()
    good = params(trainer.model)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        trainer.update = 4
        trainer.save()
    assert (tmp_path / "latest").read_text().strip() == "ckpt-0000003"
    _, model, _, _ = load_run(tmp_path)
    assert ckpt.read_trainer_state(ckpt.latest_checkpoint(tmp_path))["update"] == 3
    for name, value in good.items():
        assert torch.equal(value, model.state_dict()[name])


def test_corrupt_and_missing_runs_give_clear_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no config.json"):
        load_run(tmp_path)
    trainer = Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path, progress=False)
    trainer.fit()
    (tmp_path / "ckpt-0000003" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        load_run(tmp_path)


def test_refuses_to_overwrite_a_run(tmp_path):
    Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path, progress=False).fit()
    with pytest.raises(ckpt.CheckpointError, match="--resume"):
        Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path, progress=False).fit()


def test_per_step_supervision_blends_every_step(tmp_path):
    trainer = Trainer(SMALL_GRAPH, small_config(), tmp_path, progress=False)
    batch = trainer.batch(0)
    logits = trainer.model(batch, 4, all_steps=True).logits
    assert len(logits) == 4
    ce = [F.cross_entropy(l, batch["label"]) for l in logits]
    loss, _ = loss_and_accuracy(trainer.model, batch, 4, alpha=0.5)
    expected = 0.5 * ce[-1] + 0.5 * torch.stack(ce).mean()
    torch.testing.assert_close(loss, expected)
    silent, _ = loss_and_accuracy(trainer.model, batch, 4, alpha=0.0)
    torch.testing.assert_close(silent, ce[-1])


def small_recipe_trainer(task: str, **task_options) -> Trainer:
    """A 32-wide model of the task's quick recipe on 16 examples, batch 4, no run directory."""
    model_cfg, cfg = recipe(task, "quick")
    model_cfg = model_cfg.replace(d_model=32, n_heads=2, ffn_hidden=64)
    cfg = cfg.replace(batch_size=4, train_examples=16, task_options=task_options)
    return Trainer(model_cfg, cfg, None, progress=False)


def test_position_labels_add_each_examples_mean_over_its_targets():
    """Parity's running targets: the loss adds, per example, the mean cross-entropy over the
    positions with a target (-100: none), then the mean over examples."""
    trainer = small_recipe_trainer("parity", running_targets=True)
    batch = trainer.batch(0)
    out = trainer.model(batch, 3)
    answer = F.cross_entropy(out.logits[-1], batch["label"])
    per_example = [F.cross_entropy(logits[labels != -100], labels[labels != -100])
                   for logits, labels in zip(out.position_logits, batch["position_labels"])]
    loss, _ = loss_and_accuracy(trainer.model, batch, 3, alpha=0.0)
    torch.testing.assert_close(loss, answer + torch.stack(per_example).mean())
    graph = Trainer(SMALL_GRAPH, small_config(), None, progress=False)
    batch = dict(graph.batch(0), position_labels=torch.zeros(8, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no per-position readout"):
        graph.model(batch, 2)


def test_fixed_point_penalty_spares_the_steps_up_to_each_positions_due_step():
    """With "position_due" (parity's due_steps), a position's change is free in the two steps
    up to its due step and in the first two steps; every other change counts, and the loss
    adds the penalty so measured."""
    due = torch.tensor([[0, 3, 5]])
    penalty = StepChange(due)
    penalty.start(torch.ones(1, 3, 2), Depth(0, 5))
    for t in range(5):  # every position changes by 1/2 of its new norm at every step
        penalty.observe(t, torch.ones(1, 3, 2) * 2 ** (t + 1))
    counted = [[0, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 0]]  # steps 1..5
    torch.testing.assert_close(penalty.value, torch.tensor(counted).float().mean() * 0.5)

    trainer = small_recipe_trainer("parity", running_targets=True, due_steps=True)
    batch = trainer.batch(0)
    assert "position_due" in batch
    plain, _ = loss_and_accuracy(trainer.model, batch, 6, alpha=0.0)
    measured = StepChange(batch["position_due"])
    trainer.model(batch, 6, observers=[measured])
    loss, _ = loss_and_accuracy(trainer.model, batch, 6, alpha=0.0, fixed_point_weight=3.0)
    torch.testing.assert_close(loss, plain + 3.0 * measured.value)
    unscheduled = StepChange()
    trainer.model(batch, 6, observers=[unscheduled])
    assert measured.value < unscheduled.value


def test_a_classifier_task_with_position_targets_trains_its_position_head():
    """Family's relation targets: a classifier gets a per-position head of the task's width,
    and the loss trains it; without the option the model has no such head."""
    trainer = small_recipe_trainer("family", relation_targets=True)
    batch = trainer.batch(0)
    out = trainer.model(batch, 2)
    width = trainer.task.num_position_classes
    assert out.position_logits.shape == (*batch["input_ids"].shape, width)
    loss, _ = loss_and_accuracy(trainer.model, batch, 2, alpha=0.0)
    loss.backward()
    assert trainer.model.position_head.weight.grad.abs().sum() > 0
    assert not hasattr(small_recipe_trainer("family").model, "position_head")


def test_fixed_point_penalty_is_the_mean_relative_step_of_the_gradient_steps():
    """StepChange: mean over tokens and gradient steps of ||s_t - s_(t-1)|| / ||s_t||; the
    loss adds it with TrainConfig.fixed_point_weight, and its gradient reaches the core."""
    penalty = StepChange()
    s0 = torch.ones(1, 2, 4)
    penalty.start(s0, Depth(1, 2))
    states = [2 * s0, 2 * s0, 4 * s0]  # the no-grad step is skipped; then 0 and 1/2
    for t, s in enumerate(states):
        penalty.observe(t, s)
    torch.testing.assert_close(penalty.value, torch.tensor(0.25))
    trainer = Trainer(SMALL_GRAPH, small_config(), None, progress=False)
    batch = trainer.batch(0)
    plain, _ = loss_and_accuracy(trainer.model, batch, 3, alpha=0.0)
    measured = StepChange()
    trainer.model(batch, 3, observers=[measured])
    loss, _ = loss_and_accuracy(trainer.model, batch, 3, alpha=0.0, fixed_point_weight=2.0)
    torch.testing.assert_close(loss, plain + 2.0 * measured.value)
    measured.value.backward()  # the penalty's gradient reaches the core's weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in trainer.model.backbone.core.parameters())
    with pytest.raises(ValueError, match="fixed_point_weight"):
        small_config(fixed_point_weight=-1.0)
    assert [fixed_point_weight_at(2.0, 4, u) for u in (0, 1, 3, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert fixed_point_weight_at(2.0, 0, 0) == 2.0


def test_truncated_backprop_in_the_trainer(tmp_path):
    trainer = Trainer(SMALL_GRAPH, small_config(depth="fixed", depth_mean=12, backprop_steps=8),
                      tmp_path, progress=False)
    assert trainer.depth(0) == Depth(4, 8)
    trainer = Trainer(SMALL_GRAPH, small_config(depth="fixed", depth_mean=5, backprop_steps=8),
                      tmp_path, progress=False)
    assert trainer.depth(0) == Depth(0, 5)


def test_curriculum_raises_the_level_when_the_hardest_is_solved(tmp_path, monkeypatch):
    trainer = Trainer(SMALL_GRAPH, small_config(curriculum=True, updates=3, eval_every=1),
                      tmp_path, progress=False)
    assert trainer.max_level == 2
    assert int(trainer.batch(0)["complexity"].max()) <= 2
    monkeypatch.setattr(trainer, "evaluate", lambda: {c: 1.0 for c in trainer.levels})
    trainer.fit()
    assert trainer.max_level == 5  # 2 -> 3 -> 4 -> 5 over three evaluations


def test_curriculum_judges_a_level_without_held_out_examples_on_its_training_examples():
    """Parity's 2-bit strings are all in the training set, so that level has no held-out row:
    the curriculum must judge it on its training examples, not wait for a row that never comes."""
    model_cfg, cfg = recipe("parity", "quick")
    cfg = cfg.replace(updates=2, batch_size=8, train_examples=256, eval_every=1,
                      eval_examples=16, curriculum=True)
    trainer = Trainer(model_cfg.replace(d_model=32, n_heads=2, ffn_hidden=64), cfg, None,
                      progress=False)
    assert trainer.max_level == 2 and 2 not in trainer.source.eval_sets
    scored = []

    def accuracy(model, batch, steps):
        scored.append(batch["complexity"].tolist())
        return 1.0

    trainer.source._accuracy = accuracy
    trainer.fit()
    assert trainer.max_level == 4  # 2 -> 3 -> 4, each judged on training strings
    for level in (2, 3):  # a batch of that level's training strings was scored
        assert any(len(set(batch)) == 1 and batch[0] == level for batch in scored)


@pytest.mark.parametrize("kind, low, high, mean", [
    ("uniform", 5, 8, 6.5), ("poisson-lognormal", 1, 64, 8), ("poisson", 2, 8, 4),
    ("fixed", 1, 1, 6)])
def test_depth_samplers(kind, low, high, mean):
    draws = [sample_depth(kind, step, 7, low=low, high=high, mean=mean) for step in range(2000)]
    again = [sample_depth(kind, step, 7, low=low, high=high, mean=mean) for step in range(2000)]
    assert draws == again  # a function of (seed, step): every rank draws the same depth
    if kind == "fixed":
        assert set(draws) == {6}
        return
    assert min(draws) >= low and max(draws) <= high
    assert abs(sum(draws) / len(draws) - mean) < 0.15 * mean + 0.2
    if kind == "uniform":
        assert set(draws) == set(range(low, high + 1))


def test_unknown_depth_sampler():
    with pytest.raises(ValueError, match="unknown depth sampler"):
        sample_depth("gaussian", 0, 0, low=1, high=2, mean=1)


@pytest.mark.parametrize("changes, field", [
    (dict(updates=0), "updates"), (dict(alpha=1.5), "alpha"), (dict(depth_low=5, depth_high=4),
                                                            "depth_high"),
    (dict(backprop_steps=0), "backprop_steps")])
def test_bad_train_config(changes, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        small_config(**changes)


def test_fixed_depth_baseline_is_parameter_or_compute_matched(tmp_path):
    looped = Trainer(SMALL_GRAPH, small_config(), tmp_path / "a", progress=False).model
    same_params = Trainer(SMALL_GRAPH.replace(core="fixed", fixed_depth=1), small_config(),
                          tmp_path / "b", progress=False).model
    same_compute = Trainer(SMALL_GRAPH.replace(core="fixed", fixed_depth=4), small_config(),
                           tmp_path / "c", progress=False).model
    core_params = sum(p.numel() for p in looped.backbone.core.parameters())
    assert same_params.num_parameters() == looped.num_parameters()
    assert same_compute.num_parameters() == looped.num_parameters() + 3 * core_params
    batch = Trainer(SMALL_GRAPH, small_config(), tmp_path / "d", progress=False).batch(0)
    with torch.no_grad():
        assert torch.equal(same_compute(batch, 2).logits[-1], same_compute(batch, 9).logits[-1])


@pytest.mark.parametrize("task", ["graph", "logic", "family", "chains", "modarith"])
def test_every_recipe_builds_and_takes_a_step(task, tmp_path):
    from loopformer.training.recipes import recipe

    model_cfg, train_cfg = recipe(task, "quick")
    model_cfg = model_cfg.replace(d_model=32, ffn_hidden=64)
    train_cfg = dataclasses.replace(train_cfg, updates=1, batch_size=4, train_examples=16,
                                    eval_examples=4, depth_high=min(train_cfg.depth_high, 3),
                                    depth_low=1, depth_mean=2, eval_steps=2)
    trainer = Trainer(model_cfg, train_cfg, tmp_path, progress=False)
    before = params(trainer.model)
    result = trainer.fit()
    assert set(result) == set(trainer.levels)
    changed = [n for n, v in trainer.model.state_dict().items() if not torch.equal(v, before[n])]
    assert changed  # the update reached the weights


def test_bf16_autocast_training_runs(tmp_path):
    trainer = Trainer(SMALL_GRAPH, small_config(updates=2, bf16=True), tmp_path, progress=False)
    trainer.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master


def test_compile_option_compiles_the_repeated_regions(tmp_path):
    plain = Trainer(SMALL_GRAPH, small_config(), tmp_path / "a", progress=False).model
    compiled = Trainer(SMALL_GRAPH, small_config(compile=True), tmp_path / "b",
                       progress=False).model
    regions = lambda model: [model.backbone.prelude, model.backbone.core, model.backbone.coda]
    # torch.compile is lazy: nothing compiles until the first update.
    assert all(region._compiled_call_impl is None for region in regions(plain))
    assert all(region._compiled_call_impl is not None for region in regions(compiled))
    assert list(compiled.state_dict()) == list(plain.state_dict())  # checkpoints unchanged


def test_train_config_from_dict_names_unknown_fields_and_reads_old_names():
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['epochs'\]"):
        TrainConfig.from_dict({"epochs": 3})
    old = TrainConfig.from_dict({"steps": 7, "warmup_steps": 2, "betas": [0.9, 0.95]})
    assert (old.updates, old.warmup_updates, old.betas) == (7, 2, (0.9, 0.95))


def test_grad_accum_splits_the_same_global_batch(tmp_path):
    whole = Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path / "a", progress=False)
    whole.fit()
    split = Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path / "b", progress=False,
                    grad_accum=4)
    split.fit()
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(split.model.state_dict()[name], value, rtol=1e-4, atol=1e-6,
                                   msg=name)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl")
               .read_text().splitlines()] for run in ("a", "b")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    with pytest.raises(ValueError, match="--grad-accum 3 must be >= 1 and divide --batch-size 8"):
        Trainer(SMALL_GRAPH, small_config(), tmp_path / "c", progress=False, grad_accum=3)


def test_device_choice():
    from loopformer.training.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else \
        "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="--device must be one of"):
        resolve_device("tpu")


def test_a_trainer_state_carrying_code_is_refused_not_run(tmp_path):
    Trainer(SMALL_GRAPH, small_config(updates=3), tmp_path, progress=False).fit()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    torch.save({"update": 3, "evil": Payload()}, tmp_path / "ckpt-0000003" / "trainer.pt")
    with pytest.raises(ckpt.CheckpointError, match="no readable trainer state"):
        Trainer(SMALL_GRAPH, small_config(updates=4), tmp_path, progress=False).fit(resume=True)
    assert not marker.exists()
    load_run(tmp_path)  # evaluation never reads the trainer state


def test_group_by_length_cuts_padding_and_draws_each_window_once():
    """Logic expressions of depths 1-8 vary in length: a window of 4 batches drawn together
    and sorted by length pads less than batches drawn alone, its batches are disjoint, and a
    fresh source (a resumed run) draws the same batch for the same update."""
    from loopformer.config import ModelConfig
    from loopformer.training.sources import ExampleSource

    def source(group):
        cfg = TrainConfig(task="logic", train_examples=400, batch_size=16, eval_examples=4,
                          group_by_length=group)
        return ExampleSource(cfg, ModelConfig(vocab_size=16, d_model=16, n_heads=2))

    alone, grouped = source(0), source(4)
    batches = [grouped.batch(u) for u in range(4)]
    width = lambda batch: batch["input_ids"].numel()
    assert sum(map(width, batches)) < 0.9 * sum(width(alone.batch(u)) for u in range(4))
    pool = list(range(len(grouped.train_set)))
    drawn = [i for u in range(4) for i in grouped._grouped_batch(u, 4, pool)]
    assert len(set(drawn)) == 64  # the window's batches are disjoint
    assert torch.equal(source(4).batch(2)["input_ids"], batches[2]["input_ids"])
    assert not torch.equal(grouped.batch(4)["input_ids"], batches[0]["input_ids"])


def test_group_by_length_is_refused_for_text():
    with pytest.raises(ValueError, match="group_by_length"):
        TrainConfig(task="text", group_by_length=4)
