"""The step-observer interface: every core step is visible from outside the loop."""

import torch

from conftest import tiny_model
from loopformer import Depth
from loopformer.model.observers import StateCollector, StepObserver


class Recorder(StepObserver):
    def __init__(self):
        self.started, self.steps = None, []

    def start(self, state, depth):
        self.started = depth
        return None

    def observe(self, step, state):
        self.steps.append(step)
        return None


class StopEveryTokenAfter(StepObserver):
    def __init__(self, last_step):
        self.last_step = last_step

    def observe(self, step, state):
        return torch.full(state.shape[:2], step < self.last_step, dtype=torch.bool)


def test_depth_is_built_once_from_an_int_or_a_pair():
    assert Depth.of(5) == Depth(0, 5) and Depth.of((2, 3)) == Depth(2, 3)
    depth = Depth(1, 4)
    assert Depth.of(depth) is depth and depth.total == 5


def test_an_observer_sees_every_step_and_does_not_change_the_output():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 7))
    recorder = Recorder()
    out = model(ids, (2, 3), observers=[recorder])
    assert recorder.started == Depth(2, 3) and recorder.steps == [0, 1, 2, 3, 4]
    torch.testing.assert_close(out.logits, model(ids, 5).logits, rtol=0, atol=0)


def test_collected_states_are_the_states_after_each_gradient_step():
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 7))
    collector = StateCollector()
    out = model(ids, (2, 3), observers=[collector])
    assert len(collector.states) == 3
    assert torch.equal(collector.states[-1], out.state)
    shorter = StateCollector()
    model(ids, 4, observers=[shorter])
    torch.testing.assert_close(shorter.states[-1], collector.states[1], rtol=0, atol=1e-6)


def test_an_observer_that_stops_every_token_ends_the_loop_without_autograd():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 6))
    recorder = Recorder()
    with torch.no_grad():
        out = model(ids, 10, observers=[StopEveryTokenAfter(2), recorder])
    assert recorder.steps == [0, 1, 2] and (out.steps == 3).all()
    torch.testing.assert_close(out.logits, model(ids, 3).logits, rtol=0, atol=1e-6)
    recorder = Recorder()
    model(ids, 10, observers=[StopEveryTokenAfter(2), recorder])  # with autograd: all steps
    assert recorder.steps == list(range(10))


def test_observers_see_cached_decoding_steps():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 8))
    prefix = model(ids[:, :7], 4, use_cache=True)
    recorder = Recorder()
    with torch.no_grad():
        step = model(ids[:, 7:], 4, past_key_values=prefix.past_key_values, use_cache=True,
                     observers=[recorder])
    assert recorder.steps == [0, 1, 2, 3]
    torch.testing.assert_close(step.logits, model(ids, 4).logits[:, 7:], rtol=0, atol=1e-4)
