import json

import pytest

from loopformer.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_train_then_frontier_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--task", "graph", "--preset", "quick", "--updates", "3", "--out", str(out),
          "--no-progress"])
    main(["frontier", str(out), "--steps", "1,2,4", "--complexities", "1,3", "--examples",
          "16"])
    result = json.loads((out / "frontier.json").read_text())
    assert result["task"] == "graph" and result["steps"] == [1, 2, 4]
    assert result["complexities"] == [1, 3] and result["train_complexities"] == [1, 2, 3, 4, 5]
    assert len(result["accuracy"]) == 2 and len(result["accuracy"][0]) == 3
    assert all(0 <= a <= 1 for row in result["accuracy"] for a in row)
    assert (out / "frontier.png").stat().st_size > 1000
    assert "thinking steps" in capsys.readouterr().out
    main(["adaptive", str(out), "--criteria", "kl,cosine", "--thresholds", "kl=1e-3",
          "--max-steps", "3", "--complexities", "1,2", "--examples", "8"])
    table = json.loads((out / "adaptive.json").read_text())
    assert [row["complexity"] for row in table["rows"]] == [1, 2]
    kl = table["rows"][0]["criteria"]["kl"]
    assert kl["threshold"] == 1e-3 and 1 <= kl["mean_steps"] <= 3
    main(["curves", str(out)])
    assert (out / "curves.png").is_file()
    main(["analyze", str(out), "--examples", "6", "--steps", "8", "--out", str(tmp_path / "a")])
    analysis = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert analysis["lens_metric"] == "accuracy" and len(analysis["lens"]["accuracy"]) == 8
    assert sum(analysis["counts"].values()) == analysis["tokens"] > 0
    assert "token trajectories over 8 steps" in capsys.readouterr().out
    # --resume of a finished run trains nothing more and keeps its checkpoint.
    main(["train", "--out", str(out), "--resume", "--no-progress"])
    assert (out / "latest").read_text().strip() == "ckpt-0000003"


@pytest.mark.parametrize("args, message", [
    (["frontier", "/nonexistent/run"], "no config.json"),
    (["frontier", ".", "--steps", "1,x"], "--steps takes comma-separated integers"),
    (["frontier", ".", "--steps", "0,2"], "--steps needs integers >= 1"),
    (["train", "--task", "sudoku", "--out", "/tmp/never"], "unknown task 'sudoku'"),
    (["adaptive", ".", "--criteria", "vibes"], "unknown criterion 'vibes'"),
    (["analyze", ".", "--steps", "4"], "--steps must be >= 8"),
    (["train", "--out", "/tmp/never", "--batch-size", "8", "--grad-accum", "3"],
     "--grad-accum 3 must be >= 1 and divide --batch-size 8"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, message, capsys, tmp_path):
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_corrupt_run_directory(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{broken")
    code, _, err = run_cli(["frontier", str(tmp_path)], capsys)
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_every_config_field_is_a_flag_and_reaches_the_run(tmp_path, capsys):
    import dataclasses

    from loopformer.config import ModelConfig
    from loopformer.training.config import TrainConfig

    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    for prefix, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for field in dataclasses.fields(cls):
            assert f"--{prefix}.{field.name.replace('_', '-')}" in out, field.name
    run = tmp_path / "run"
    main(["train", "--updates", "2", "--out", str(run), "--no-progress", "--model.d-model",
          "32", "--model.ffn-hidden", "64", "--train.lr", "0.002", "--train.betas", "0.8",
          "0.9", "--seed", "3"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["model"]["ffn_hidden"] == 64
    assert saved["train"]["lr"] == 0.002 and saved["train"]["betas"] == [0.8, 0.9]
    assert saved["train"]["seed"] == 3 and saved["train"]["updates"] == 2
    assert saved["model"]["injection"] == "gated"  # the rest from the graph recipe

    # A run's config.json repeats it exactly.
    main(["train", "--config", str(run / "config.json"), "--out", str(tmp_path / "again"),
          "--no-progress"])
    weights = "ckpt-0000002/model.safetensors"
    assert (run / weights).read_bytes() == (tmp_path / "again" / weights).read_bytes()


@pytest.mark.parametrize("args, config, message", [
    (["--model.wings", "3"], None, "unknown flag '--model.wings'"),
    ([], {"model": {"wings": 3}}, "unknown ModelConfig fields ['wings']"),
    ([], {"optimizer": {}}, "unknown keys ['optimizer']"),
    (["--updates", "3", "--train.updates", "5"], None, "--updates 3 and --train.updates 5"),
    (["--model.n-heads", "3"], None, "ModelConfig.n_heads must divide d_model"),
    (["--parallel", "fsdp"], None, "launch with `torchrun --nproc-per-node N"),
])
def test_bad_train_input_writes_nothing(args, config, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        args = [*args, "--config", str(tmp_path / "c.json")]
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--out", str(out), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
