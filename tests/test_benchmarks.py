"""The benchmark suite's measuring code runs end to end (tiny model; no time is asserted)."""

from benchmarks.suite import MatmulPeak, TrainingCase, decode_rows, pairwise_ratio, training_rows
from conftest import tiny_config, tiny_model


def test_training_rows_and_pairwise_ratios():
    cfg = tiny_config(max_seq_len=128)  # the suite's batch is 8 x 128 tokens
    rows = training_rows([TrainingCase("looped", cfg), TrainingCase("bf16", cfg, bf16=True)],
                         repeats=2, peak=MatmulPeak(size=64))
    assert [r["benchmark"] for r in rows] == ["looped", "bf16"]
    assert all(r["GFLOP/step"] > r["attention GFLOP"] > 0 and r["% of peak"] > 0 for r in rows)
    assert pairwise_ratio(rows[0], rows[0]) == 1.0


def test_decode_rows_report_a_speed_up():
    rows = decode_rows(tiny_model().cfg, context=8, new=2, repeats=1)
    assert len(rows) == 3 and rows[2]["cache speed-up"] > 0


def test_fsdp_gathers_the_looped_core_once_whatever_the_depth():
    """The core stays gathered across the loop and its backward: the collectives of an update
    (counted by the profiler on 2 gloo processes) do not grow with the number of steps, and
    match the formula the paper extrapolation uses."""
    from benchmarks.comm import (WORLD, measure_collectives, predicted_wire_bytes, unit_params,
                                 wire_bytes)

    cfg = tiny_config(max_seq_len=128)
    shallow = measure_collectives(cfg, 2, "fsdp", updates=1)
    deep = measure_collectives(cfg, 6, "fsdp", updates=1)
    assert shallow == deep
    predicted = predicted_wire_bytes(**unit_params(cfg), parallel="fsdp", world=WORLD)
    assert abs(wire_bytes(deep, "fsdp") - predicted) < 0.01 * predicted  # shard padding


def test_variant_rows_compare_cache_sizes_and_active_parameters():
    from benchmarks.variants import attention_rows, ffn_rows

    base = tiny_config(d_model=64, n_heads=8, n_kv_heads=None)
    attention = attention_rows(prompt=8, new_tokens=2, repeats=1, base=base)
    mha, gqa, mla, small_mla = (r["cache B/token"] for r in attention)
    assert mha == 4 * gqa and small_mla < mla < gqa
    dense, moe, wide = ffn_rows(batch=2, seq=8, repeats=1, base=base)
    assert dense["params"] < moe["params"] < wide["params"]
    # Active: top-2 + 1 shared experts of width 64 make the dense 192; the routers' rows (8 or
    # 16 experts x d 64, in 3 blocks) are the only difference.
    assert moe["active params"] - dense["params"] == 3 * 8 * 64
    assert wide["active params"] - dense["params"] == 3 * 16 * 64
    assert all(r["train MFLOP/token"] > 0 and r["train tok/s"] > 0 for r in (dense, moe, wide))


def test_adaptive_benchmark_decodes_what_the_full_forward_predicts():
    """Teacher-forced cached decoding at a fixed depth reads the same logits as one forward
    pass; under an exit criterion it reports fewer steps than its maximum."""
    import torch

    from benchmarks.adaptive import decode, prefill

    model = tiny_model(injection="gated", state_init="embed")
    ids = torch.randint(0, 64, (2, 12))
    full, steps = prefill(model, ids, 4, {})
    decoded, decode_steps = decode(model, ids, 5, 4, {})
    assert steps == decode_steps == 4.0
    torch.testing.assert_close(decoded, full[:, 4:], rtol=0, atol=1e-4)
    exits = dict(exit_criterion="latent-diff", exit_threshold=0.3)
    _, adaptive_steps = decode(model, ids, 5, 24, exits)
    assert 1 <= adaptive_steps < 24


def test_decode_table_row_times_eager_and_compiled_generation(monkeypatch):
    import copy

    import torch

    import benchmarks.decode as decode

    model = tiny_model(max_seq_len=128)
    monkeypatch.setattr(decode, "CONFIG", model.cfg)
    compiled = copy.deepcopy(model)
    compiled.compile_regions(backend="eager")  # generate(compile=True) then compiles no more
    row = decode.run_case({"eager": model, "compiled": compiled}, batch=2, prompt_len=6,
                          new=4, steps=3, repeats=1, peak=MatmulPeak(size=64))
    assert row["same tokens"] == "yes" and row["graphs compiled while timed"] == 0
    assert row["eager tok/s"] > 0 and row["compiled tok/s"] > 0 and row["cache MB"] > 0
    assert 0 < row["compiled / floor"] < 1
    # One decoded token after 8 cached: the matmuls of 1 + 3 + 1 blocks and the head, at least.
    assert row["MFLOP/token"] * 1e6 > 2 * model.num_parameters() - 2 * model.embed.weight.numel()
    torch._dynamo.reset()


def test_huginn_comparison_names_the_missing_files(tmp_path):
    import pytest

    from benchmarks.huginn import load_huginn

    with pytest.raises(SystemExit, match="raven_modeling_minimal.py"):
        load_huginn(tmp_path)


def test_adaptive_task_benchmark_scores_each_example_alike_alone_or_in_a_batch():
    """The task path of the adaptive benchmark: an exit stops each example on its own, so one
    batch of mixed complexities and the same examples one at a time agree on accuracy and
    steps; a fixed depth spends exactly its steps."""
    import random

    from benchmarks.adaptive import answer_accuracy
    from loopformer.model.exits import ExitRule
    from loopformer.tasks import make_task
    from loopformer.tasks.interfaces import build_task_model
    from loopformer.training.recipes import recipe

    task = make_task("chains", num_entities=20, train_hops=4)
    model = build_task_model(task, recipe("chains", "quick")[0].replace(
        vocab_size=30, d_model=32, n_heads=2, ffn_hidden=64)).eval()
    rng = random.Random(0)
    examples = [task.sample(c, rng) for c in (1, 2, 3, 4) * 3]
    rule = ExitRule("latent-diff", 0.3)
    together = answer_accuracy(model, [task.collate(examples)], 12, rule)
    alone = answer_accuracy(model, [task.collate([ex]) for ex in examples], 12, rule)
    assert together[0] == alone[0] and abs(together[1] - alone[1]) < 1e-9
    assert 1 <= together[1] < 12
    assert answer_accuracy(model, [task.collate(examples)], 5, None)[1] == 5
