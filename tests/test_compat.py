"""Run directories written by loopformer 0.1 (tests/fixtures, made by that version) still load,
evaluate and resume, and resuming reaches the weights 0.1 itself reached."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loopformer.cli import main
from loopformer.training.checkpoint import latest_checkpoint, read_trainer_state
from loopformer.training.run import load_config, load_run, read_metrics

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["graph", "chains"])
def old_run(request, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / f"run-v0.1-{request.param}", run)
    return request.param, run


def test_an_old_run_loads_with_its_old_field_names(old_run):
    task, run = old_run
    stored = json.loads((run / "config.json").read_text())["train"]
    assert "steps" in stored and "updates" not in stored  # written by 0.1
    _, train_cfg = load_config(run)
    assert train_cfg.updates == stored["steps"] == 3
    assert train_cfg.warmup_updates == stored["warmup_steps"]
    load_run(run)
    assert read_trainer_state(latest_checkpoint(run))["step"] == 2
    assert [r["update"] for r in read_metrics(run)] == [1, 2]


def test_an_old_run_evaluates(old_run, capsys):
    task, run = old_run
    main(["frontier", str(run), "--steps", "1,3", "--complexities", "1,2", "--examples", "8"])
    result = json.loads((run / "frontier.json").read_text())
    assert result["task"] == task and len(result["accuracy"]) == 2
    main(["curves", str(run)])
    assert (run / "curves.png").is_file()


def test_an_old_run_resumes_to_the_weights_of_the_old_version(old_run, capsys):
    """Where the task's generator changed since (graph, 0.4: leaks fixed), the resumed update
    trains on the new examples, and the command says so."""
    task, run = old_run
    main(["train", "--out", str(run), "--resume", "--no-progress"])
    assert (run / "latest").read_text().strip() == "ckpt-0000003"
    changed = "generator of task 'graph' changed" in capsys.readouterr().err
    assert changed == (task == "graph")
    if changed:
        return
    expected = load_file(FIXTURES / f"run-v0.1-{task}.resumed.safetensors")
    resumed = load_file(run / "ckpt-0000003" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3]


def test_a_checkpoint_from_before_a_new_config_field_still_loads(tmp_path):
    """Weights record the config they were trained with; a field added since (MLA, MoE, LoRA
    in 0.3) held its default then, so the checkpoint still fits."""
    from safetensors.torch import save_file

    from loopformer import ModelConfig
    from loopformer.training.checkpoint import CONFIG_KEY, CheckpointError, read_weights

    current = ModelConfig().to_dict()
    older = {k: v for k, v in current.items()
             if k not in ("attention", "ffn", "n_experts", "step_lora_rank")}
    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors",
              metadata={CONFIG_KEY: json.dumps(older)})
    assert set(read_weights(tmp_path, current)) == {"w"}
    with pytest.raises(CheckpointError, match="ffn"):
        read_weights(tmp_path, {**current, "ffn": "moe"})
