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
