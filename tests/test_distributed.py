"""Data-parallel training on 2 CPU processes with gloo (DDP and FSDP2): the same global batch
per update, the same weights as one process, one metrics file, and exact resume."""

import faulthandler
import json
import os
import shutil
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loopformer.training.config import TrainConfig
from loopformer.training.recipes import GRAPH_MODEL
from loopformer.training.trainer import Trainer

MODEL = GRAPH_MODEL.replace(d_model=32, ffn_hidden=64)


def config(updates: int) -> TrainConfig:
    return TrainConfig(task="graph", updates=updates, batch_size=8, train_examples=64,
                       eval_examples=16, eval_every=2, checkpoint_every=2, warmup_updates=2,
                       lr=3e-3, depth_low=2, depth_high=4)


def _train(rank, world, port, out, updates, resume, parallel, grad_accum, model):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    faulthandler.enable()  # a C++ abort prints each thread's Python stack, to say where
    try:
        Trainer(model, config(updates), out, progress=False, device="cpu", parallel=parallel,
                grad_accum=grad_accum).fit(resume=resume)
        # Both processes reach the teardown together: a process that tore gloo down while the
        # main one was still writing its checkpoint aborted once in CI ("terminate called
        # without an active exception"). A failed process skips this; spawn stops the other.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's finalisation. A process aborted at the end of this test
    # in CI twice ("terminate called without an active exception"), most likely there: gloo
    # worker threads can still hold tensors whose release then fails (the mechanism described
    # in pytorch/pytorch#179291). Everything this process owed is on disk already.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def train_on_processes(world, out, updates, parallel, resume=False, grad_accum=1, model=MODEL):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_train, args=(world, port, out, updates, resume, parallel, grad_accum, model),
             nprocs=world, join=True)


def weights(run):
    from safetensors.torch import load_file

    return load_file(run / (run / "latest").read_text().strip() / "model.safetensors")


@pytest.mark.parametrize("parallel, grad_accum", [("ddp", 1), ("fsdp", 2)])
def test_two_processes_train_like_one_and_resume(tmp_path, parallel, grad_accum):
    Trainer(MODEL, config(4), tmp_path / "one", progress=False, device="cpu").fit()
    train_on_processes(2, tmp_path / "two", 4, parallel, grad_accum=grad_accum)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=name)
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1, 2, 3, 4]  # written once
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(line)["loss"] for line in lines] == pytest.approx(losses, rel=1e-4)

    train_on_processes(2, tmp_path / "resumed", 2, parallel, grad_accum=grad_accum)
    shutil.copytree(tmp_path / "resumed", tmp_path / "switched")
    train_on_processes(2, tmp_path / "resumed", 4, parallel, resume=True, grad_accum=grad_accum)
    resumed = weights(tmp_path / "resumed")
    for name, value in two.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)

    # The optimiser state is stored by parameter name: one process resumes a 2-process run.
    Trainer(MODEL, config(4), tmp_path / "switched", progress=False, device="cpu").fit(resume=True)
    switched = weights(tmp_path / "switched")
    for name, value in one.items():
        torch.testing.assert_close(switched[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_mla_moe_and_step_adapters_shard_like_one_process(tmp_path):
    """FSDP2 over the 3-d expert weights and adapter tables; the routed load is summed over
    processes, so the aux-free biases move exactly as in one process."""
    from conftest import MLA, MOE

    model = MODEL.replace(**MLA, **MOE, step_lora_rank=2)
    Trainer(model, config(2), tmp_path / "one", progress=False, device="cpu").fit()
    train_on_processes(2, tmp_path / "two", 2, "fsdp", model=model)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert any(name.endswith("mlp.bias") and value.abs().sum() > 0 for name, value in one.items())
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_parallel_without_torchrun_says_how_to_launch(tmp_path, monkeypatch, parallel):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="launch with `torchrun --nproc-per-node N"):
        Trainer(MODEL, config(2), tmp_path, progress=False, parallel=parallel)
    assert not tmp_path.joinpath("config.json").exists()
