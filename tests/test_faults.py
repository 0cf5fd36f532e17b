"""Runs survive faults and bad files: a kill at any moment, a full disk, a second writer, damaged
or hostile run directories, a diverging loss. Every refusal is one clear line."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from loopformer.cli import main
from loopformer.files import DirectoryInUse, DirectoryLock
from loopformer.training import checkpoint as ckpt
from loopformer.training import trainer as trainer_module
from loopformer.training.config import TrainConfig
from loopformer.training.recipes import GRAPH_MODEL
from loopformer.training.run import load_run, read_metrics
from loopformer.training.trainer import Trainer, TrainingDiverged

MODEL = GRAPH_MODEL.replace(d_model=32, ffn_hidden=64)
SMALL = ["--model.d-model", "32", "--model.ffn-hidden", "64", "--batch-size", "8",
         "--train.train-examples", "64", "--train.eval-examples", "16", "--no-progress"]


def config(**changes) -> TrainConfig:
    return TrainConfig(task="graph", updates=4, batch_size=8, train_examples=64,
                       eval_examples=16, eval_every=2, checkpoint_every=1, warmup_updates=2,
                       lr=3e-3, depth_low=2, depth_high=4).replace(**changes)


def cli_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_run_killed_before_its_first_checkpoint_resumes(tmp_path):
    """SIGKILL mid-run (no checkpoint yet): the lock dies with the process, a torn metrics
    line and an orphan temporary are cleaned up, and --resume starts the run again."""
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "loopformer", "train", "--out", str(run), "--updates", "100000",
         "--train.checkpoint-every", "100000", "--threads", "1", *SMALL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file() or not read_metrics(run):
            assert child.poll() is None and time.time() < deadline
            time.sleep(0.2)
        with pytest.raises(DirectoryInUse, match=f"pid {child.pid}"):
            Trainer(MODEL, config(), run, progress=False).fit()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not (run / "latest").exists()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"update": 99999, "lo')  # torn by the kill
    (run / ".ckpt-0000007.x1y2.tmp").mkdir()
    main(["train", "--out", str(run), "--resume", "--updates", "2", "--no-progress"])
    assert (run / "latest").read_text().strip() == "ckpt-0000002"
    assert [r["update"] for r in read_metrics(run)] == [1, 2]
    assert not list(run.glob(".*.tmp"))


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, capsys, monkeypatch):
    main(["train", "--out", str(tmp_path), "--updates", "2", *SMALL])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    err = cli_error(["train", "--out", str(tmp_path), "--resume", "--updates", "3",
                     "--no-progress"], capsys)
    assert "No space left on device" in err and "ckpt-0000002" in err
    assert (tmp_path / "latest").read_text().strip() == "ckpt-0000002"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_writer_is_refused(tmp_path, capsys):
    tmp_path.mkdir(exist_ok=True)
    with DirectoryLock(tmp_path):
        err = cli_error(["train", "--out", str(tmp_path), "--updates", "2", *SMALL], capsys)
    assert f"pid {os.getpid()}" in err and "in use" in err
    assert not (tmp_path / "config.json").exists()


def test_a_diverging_loss_stops_at_its_update_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    calls = []
    original = trainer_module.loss_and_accuracy

    def nan_at_third(*args, **kwargs):
        loss, acc = original(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), acc

    monkeypatch.setattr(trainer_module, "loss_and_accuracy", nan_at_third)
    with pytest.raises(TrainingDiverged, match="update 3: loss nan"):
        Trainer(MODEL, config(), tmp_path, progress=False).fit()
    assert (tmp_path / "latest").read_text().strip() == "ckpt-0000002"
    assert [r["update"] for r in read_metrics(tmp_path)] == [1, 2]
    _, model, _, _ = load_run(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture
def run(tmp_path):
    Trainer(MODEL, config(updates=2), tmp_path, progress=False).fit()
    return tmp_path


def test_evaluation_never_reads_the_trainer_state(run):
    (run / "ckpt-0000002" / "trainer.pt").unlink()
    main(["frontier", str(run), "--steps", "1,2", "--complexities", "1", "--examples", "4"])


def test_a_changed_config_or_shape_does_not_load_silently(run):
    stored = json.loads((run / "config.json").read_text())
    stored["model"]["causal"] = not stored["model"]["causal"]  # same shapes, other model
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ckpt.CheckpointError, match="different model config.*causal"):
        load_run(run)
    stored["model"]["causal"] = not stored["model"]["causal"]
    stored["model"]["d_model"] = 64  # and a checkpoint without its config (loopformer 0.1)
    (run / "config.json").write_text(json.dumps(stored))
    weights = run / "ckpt-0000002" / "model.safetensors"
    save_file(load_file(weights), weights)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model"):
        load_run(run)


def test_damaged_files_are_refused(run):
    weights = run / "ckpt-0000002" / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights)
    with pytest.raises(ckpt.CheckpointError, match=f"{name} holds non-finite"):
        load_run(run)
    torch.save({"update": 2}, run / "ckpt-0000002" / "trainer.pt")
    with pytest.raises(ckpt.CheckpointError, match="incomplete trainer state"):
        ckpt.read_trainer_state(run / "ckpt-0000002")


def test_latest_must_name_a_checkpoint_of_its_own_run(run, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (run / "latest").write_text(f"../{elsewhere.name}/ckpt-0000002\n")
    with pytest.raises(ckpt.CheckpointError, match="refusing to follow it"):
        load_run(run)


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(MODEL, config(updates=1), tmp_path, progress=False).fit()
    finally:
        os.umask(old)
    for path in tmp_path.rglob("*"):
        if path.name != ".lock":
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_resume_names_what_it_ignores_and_extends_with_updates(tmp_path, capsys):
    main(["train", "--out", str(tmp_path), "--updates", "2", *SMALL])
    capsys.readouterr()
    main(["train", "--out", str(tmp_path), "--resume", "--updates", "3", "--task", "logic",
          "--no-progress"])
    out = capsys.readouterr().out
    assert "ignoring --task" in out and "2 -> 3 updates" in out
    assert [r["update"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["updates"] == 3
    main(["train", "--out", str(tmp_path), "--resume", "--no-progress"])  # finished
    assert "held-out accuracy by complexity: 1:" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "--threads", "0"], "--threads must be >= 1"),
    (["train", "--seed", "-1"], "TrainConfig.seed must be >= 0"),
    (["train", "--train.task-options", "hops", "3"], "unknown option 'hops' for task 'graph'"),
    (["adaptive", "RUN", "--examples", "0"], "--examples must be >= 1"),
    (["adaptive", "RUN", "--max-steps", "0"], "--max-steps must be >= 1"),
    (["adaptive", "RUN", "--min-steps", "5", "--max-steps", "2"], "--min-steps 5 exceeds"),
    (["frontier", "RUN", "--threads", "-1"], "--threads must be >= 1"),
])
def test_bad_command_lines_write_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    args = [str(out) if a == "RUN" else a for a in args]
    if args[0] == "train":
        args += ["--out", str(out), "--updates", "2", *SMALL]
    assert message in cli_error(args, capsys)
    assert not out.exists()


def test_an_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert "is a file" in cli_error(["train", "--out", str(tmp_path / "file"), *SMALL], capsys)
    cli_error(["train", "--out", str(tmp_path / "file" / "run"), *SMALL], capsys)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        cli_error(["train", "--out", str(tmp_path / "ro" / "run"), *SMALL], capsys)


def test_non_finite_logits_never_score():
    from loopformer.evaluation.scoring import is_correct

    logits = torch.tensor([[float("nan"), 0.0], [1.0, 0.0], [0.0, float("inf")]])
    assert is_correct(logits, torch.tensor([0, 0, 1])).tolist() == [False, True, False]


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.zeros(0, 4, dtype=torch.long)), "input_ids of shape \\(0, 4\\) is empty"),
    (lambda m: m(torch.zeros(2, 4, dtype=torch.long), labels=torch.full((2, 4), 64)),
     "labels must lie in \\[0, 64\\)"),
    (lambda m: m(torch.zeros(2, 4, dtype=torch.long), labels=torch.zeros(2, 3, dtype=torch.long)),
     "labels must be integer ids shaped like input_ids"),
    (lambda m: m(torch.zeros(2, 4, dtype=torch.long), initial_state=torch.zeros(2, 4, 8)),
     "initial_state must have shape"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long),
                 past_key_values=m(torch.zeros(2, 4, dtype=torch.long),
                                   use_cache=True).past_key_values),
     "past_key_values holds 2 sequences but input_ids has 1"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.full((1, 4), 2)),
     "attention_mask must hold only 0"),
    (lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), do_sample=True,
                          temperature=float("nan")), "temperature must be a finite number"),
    (lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), eos_token_id=64),
     "eos_token_id must lie in"),
    (lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), eos_token_id=1, pad_token_id=-1),
     "pad_token_id must lie in"),
    (lambda m: m.generate_speculative(torch.zeros(1, 2, dtype=torch.long), eos_token_id=99),
     "eos_token_id must lie in"),
])
def test_api_inputs_that_would_be_silently_wrong_name_the_argument(call, message):
    from conftest import tiny_model

    with pytest.raises(ValueError, match=message):
        call(tiny_model())
